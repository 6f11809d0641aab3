// SQLite writes a WAL frame with two pwrite calls (its 24-byte header, then
// the page), and the commit of a metered call's settlement writes a dozen
// frames. On the VMs tollgate was measured on, a pwrite costs about 3.4 µs
// whatever its size: two dozen of them are most of a small commit, while one
// pwrite of the same bytes takes about 4 µs (bench/README.md). This VFS
// wraps the default one and, for WAL files, gathers consecutive writes in
// memory and hands them to the file as one write.
//
// When gathered bytes reach the file (each connection's WAL file is linked
// to its own main database file, so nothing crosses connections or threads):
// - before any other operation on the WAL file (a read, a write elsewhere,
//   sync, truncate, size, close) and before the buffer passes 64 KiB;
// - before any operation on the linked main database file. That covers the
//   publication of a commit, which SQLite makes visible around xShmBarrier on
//   the main file, and the release of the write lock (xShmLock), so frames of
//   a transaction that rolled back never land over frames a later writer
//   committed.
// A commit is therefore in the kernel's page cache before COMMIT returns,
// exactly as without this VFS, and survives kill -9 of tollgate (SPEC 4).
//
// Errors. A failed write is reported by the operation that flushed it. At
// xShmBarrier nothing can be reported, and going on would publish a commit
// whose frames are not in the file, so the process stops there (a restart
// recovers as from a crash). To make that failure all but impossible, WAL
// space is allocated ahead, in 1 MiB steps, by the write that first reaches
// past it (fallocate with FALLOC_FL_KEEP_SIZE: the file's size, which SQLite
// reads, does not change). A full disk is then reported there, as
// SQLITE_FULL, and the commit fails as it would without this VFS. Where space
// cannot be allocated ahead, the file does not gather at all. A failed flush
// is kept and reported by every later write of that WAL file; unlocks go
// through regardless (SQLite ignores their result).
#include "gathering_vfs.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>

namespace tollgate::ledger::sql {
namespace {

// The unix VFS writes at most 128 KiB - 1 bytes per call (it masks the
// length), so a flush stays well under that.
constexpr std::size_t gather_limit = 64 << 10;
constexpr sqlite3_int64 allocation_step = 1 << 20;

std::atomic<std::uint64_t> gathered_writes{0};
std::atomic<std::uint64_t> flushes{0};
std::atomic<std::uint64_t> linked_wal_files{0};

sqlite3_vfs* base_vfs = nullptr;
sqlite3_vfs vfs{};

struct gathering_file {
    sqlite3_file self;               // first: SQLite sees this struct as its sqlite3_file
    sqlite3_file* real = nullptr;    // the default VFS's file, placed after this struct
    const char* name = nullptr;      // a main file's name, as SQLite passed it
    gathering_file* main = nullptr;  // a WAL file's main database file
    gathering_file* wal = nullptr;   // a main file's linked WAL file
    std::string buffer;              // gathered bytes of a WAL file, from `start`
    sqlite3_int64 start = 0;
    int allocate_fd = -1;            // the WAL file again, for fallocate
    bool gathers = true;             // false once space cannot be allocated ahead: writes then go straight through
    int failed = SQLITE_OK;          // a flush that failed: every later WAL write and flush reports it
    sqlite3_int64 allocated_to = 0;  // space up to here is allocated
    std::string path;                // a WAL file's path, to open allocate_fd
};

// Main database files by the name pointer SQLite gave their xOpen. SQLite
// keeps a connection's database, journal and WAL names in one block, and
// sqlite3_filename_database() on the WAL's name gives back that same pointer:
// that is how a WAL file finds its own connection's main file.
std::mutex names_mu;
std::unordered_map<const char*, gathering_file*> main_by_name;

gathering_file* of(sqlite3_file* f) {
    return reinterpret_cast<gathering_file*>(f);
}
sqlite3_file* real(sqlite3_file* f) {
    return of(f)->real;
}
const sqlite3_io_methods& real_methods(sqlite3_file* f) {
    return *real(f)->pMethods;
}

// A failure is kept: SQLite ignores the result of some operations that
// flush (an unlock, a file-control hint), and the frames it lost must not be
// forgotten before the next commit is published. The connection's writes
// then fail until it is closed (the ledger stops at its first failed commit).
int flush(gathering_file* f) {
    if (!f) return SQLITE_OK;
    if (f->failed != SQLITE_OK) return f->failed;
    if (f->buffer.empty()) return SQLITE_OK;
    const int rc = f->real->pMethods->xWrite(f->real, f->buffer.data(), static_cast<int>(f->buffer.size()), f->start);
    f->buffer.clear();
    flushes.fetch_add(1, std::memory_order_relaxed);
    f->failed = rc;
    return rc;
}

int flush_linked(sqlite3_file* main) {
    return flush(of(main)->wal);
}

// Space for [.., end) before bytes are gathered for it: SQLITE_FULL when the
// disk cannot hold it, while the commit can still fail cleanly. Where space
// cannot be allocated ahead (no second descriptor, a file system without
// fallocate), the file stops gathering: its writes go straight through and
// report their own errors, as without this VFS.
//
// `allocated_to` follows this connection's own truncations and WAL restarts;
// another connection truncating the WAL (journal_size_limit, which tollgate
// does not set) would leave it stale.
int allocate_to(gathering_file* f, sqlite3_int64 end) {
    if (end <= f->allocated_to) return SQLITE_OK;
    if (f->allocate_fd < 0) f->allocate_fd = ::open(f->path.c_str(), O_WRONLY | O_CLOEXEC);
    if (f->allocate_fd >= 0) {
        const sqlite3_int64 to = (end + allocation_step - 1) / allocation_step * allocation_step;
        int rc = 0;
        do {
            rc = ::fallocate(f->allocate_fd, FALLOC_FL_KEEP_SIZE, f->allocated_to, to - f->allocated_to);
        } while (rc != 0 && errno == EINTR);
        if (rc == 0) {
            f->allocated_to = to;
            return SQLITE_OK;
        }
        if (errno == ENOSPC || errno == EDQUOT) return SQLITE_FULL;
        // SQLite holds no POSIX locks on the WAL file, so closing this second
        // descriptor releases none of its locks.
        ::close(f->allocate_fd);
        f->allocate_fd = -1;
    }
    f->gathers = false;
    return SQLITE_OK;
}

// --- WAL files ---------------------------------------------------------------

int wal_write(sqlite3_file* file, const void* data, int amount, sqlite3_int64 offset) {
    auto* f = of(file);
    if (f->main && f->gathers) {
        if (offset == 0) f->allocated_to = 0;  // a new WAL generation: check the space again
        if (const int rc = allocate_to(f, offset + amount); rc != SQLITE_OK) return rc;
    }
    const auto n = static_cast<std::size_t>(amount);
    const bool gather = f->main && f->gathers && n <= gather_limit;
    const bool follows = !f->buffer.empty() && offset == f->start + static_cast<sqlite3_int64>(f->buffer.size());
    if (!gather || !follows || f->buffer.size() + n > gather_limit) {
        if (const int rc = flush(f); rc != SQLITE_OK) return rc;
    }
    if (!gather) return real_methods(file).xWrite(f->real, data, amount, offset);
    if (f->buffer.empty()) f->start = offset;
    f->buffer.append(static_cast<const char*>(data), n);
    gathered_writes.fetch_add(1, std::memory_order_relaxed);
    return SQLITE_OK;
}

int wal_read(sqlite3_file* file, void* out, int amount, sqlite3_int64 offset) {
    if (const int rc = flush(of(file)); rc != SQLITE_OK) return rc;
    return real_methods(file).xRead(real(file), out, amount, offset);
}

int wal_truncate(sqlite3_file* file, sqlite3_int64 size) {
    auto* f = of(file);
    if (const int rc = flush(f); rc != SQLITE_OK) return rc;
    if (size < f->allocated_to) f->allocated_to = 0;  // the blocks past `size` are freed
    return real_methods(file).xTruncate(f->real, size);
}

// --- both kinds ---------------------------------------------------------------

// Every operation but a WAL write first writes out what is gathered: for a
// WAL file its own bytes, for a main file its linked WAL file's.
int flush_for(sqlite3_file* file) {
    return of(file)->main || !of(file)->name ? flush(of(file)) : flush_linked(file);
}

int any_close(sqlite3_file* file) {
    auto* f = of(file);
    int rc = flush_for(file);
    if (f->main) {
        f->main->wal = nullptr;
    } else if (f->name) {
        if (f->wal) f->wal->main = nullptr;
        std::lock_guard lock(names_mu);
        if (auto it = main_by_name.find(f->name); it != main_by_name.end() && it->second == f) main_by_name.erase(it);
    }
    if (f->allocate_fd >= 0) ::close(f->allocate_fd);
    const int close_rc = real_methods(file).xClose(f->real);
    f->~gathering_file();
    return rc != SQLITE_OK ? rc : close_rc;
}

int any_read(sqlite3_file* file, void* out, int amount, sqlite3_int64 offset) {
    if (const int rc = flush_for(file); rc != SQLITE_OK) return rc;
    return real_methods(file).xRead(real(file), out, amount, offset);
}

int main_write(sqlite3_file* file, const void* data, int amount, sqlite3_int64 offset) {
    if (const int rc = flush_for(file); rc != SQLITE_OK) return rc;
    return real_methods(file).xWrite(real(file), data, amount, offset);
}

int main_truncate(sqlite3_file* file, sqlite3_int64 size) {
    if (const int rc = flush_for(file); rc != SQLITE_OK) return rc;
    return real_methods(file).xTruncate(real(file), size);
}

int any_sync(sqlite3_file* file, int flags) {
    if (const int rc = flush_for(file); rc != SQLITE_OK) return rc;
    return real_methods(file).xSync(real(file), flags);
}

int any_file_size(sqlite3_file* file, sqlite3_int64* size) {
    if (const int rc = flush_for(file); rc != SQLITE_OK) return rc;
    return real_methods(file).xFileSize(real(file), size);
}

int any_lock(sqlite3_file* file, int level) {
    if (const int rc = flush_for(file); rc != SQLITE_OK) return rc;
    return real_methods(file).xLock(real(file), level);
}

// Unlocks always go through: SQLite ignores their result and considers the
// lock gone, so a failed flush (kept, see flush) must not keep it held.
int any_unlock(sqlite3_file* file, int level) {
    const int rc = flush_for(file);
    const int unlock_rc = real_methods(file).xUnlock(real(file), level);
    return rc != SQLITE_OK ? rc : unlock_rc;
}

int any_check_reserved_lock(sqlite3_file* file, int* out) {
    return real_methods(file).xCheckReservedLock(real(file), out);
}

int any_file_control(sqlite3_file* file, int op, void* arg) {
    if (const int rc = flush_for(file); rc != SQLITE_OK) return rc;
    return real_methods(file).xFileControl(real(file), op, arg);
}

int any_sector_size(sqlite3_file* file) {
    return real_methods(file).xSectorSize(real(file));
}

int any_device_characteristics(sqlite3_file* file) {
    return real_methods(file).xDeviceCharacteristics(real(file));
}

int any_shm_map(sqlite3_file* file, int page, int page_size, int extend, void volatile** out) {
    if (const int rc = flush_for(file); rc != SQLITE_OK) return rc;
    return real_methods(file).xShmMap(real(file), page, page_size, extend, out);
}

int any_shm_lock(sqlite3_file* file, int offset, int n, int flags) {
    const int rc = flush_for(file);
    if (rc != SQLITE_OK && !(flags & SQLITE_SHM_UNLOCK)) return rc;
    const int lock_rc = real_methods(file).xShmLock(real(file), offset, n, flags);
    return rc != SQLITE_OK ? rc : lock_rc;
}

void any_shm_barrier(sqlite3_file* file) {
    // Readers pass here too: only bytes gathered now can be lost here (an
    // earlier failure made the next WAL write fail, before any publication).
    gathering_file* wal = of(file)->main ? of(file) : of(file)->wal;
    if (wal && !wal->buffer.empty()) {
        if (const int rc = flush(wal); rc != SQLITE_OK) {
            std::fprintf(stderr,
                         "tollgate ledger: writing the WAL failed (%s) just before a commit was published; stopping "
                         "rather than publish a commit that is not in the file\n",
                         sqlite3_errstr(rc));
            std::abort();
        }
    }
    real_methods(file).xShmBarrier(real(file));
}

int any_shm_unmap(sqlite3_file* file, int delete_flag) {
    if (const int rc = flush_for(file); rc != SQLITE_OK) return rc;
    return real_methods(file).xShmUnmap(real(file), delete_flag);
}

int any_fetch(sqlite3_file* file, sqlite3_int64 offset, int amount, void** out) {
    if (const int rc = flush_for(file); rc != SQLITE_OK) return rc;
    return real_methods(file).xFetch(real(file), offset, amount, out);
}

int any_unfetch(sqlite3_file* file, sqlite3_int64 offset, void* p) {
    return real_methods(file).xUnfetch(real(file), offset, p);
}

const sqlite3_io_methods main_methods = {
    3,
    any_close,
    any_read,
    main_write,
    main_truncate,
    any_sync,
    any_file_size,
    any_lock,
    any_unlock,
    any_check_reserved_lock,
    any_file_control,
    any_sector_size,
    any_device_characteristics,
    any_shm_map,
    any_shm_lock,
    any_shm_barrier,
    any_shm_unmap,
    any_fetch,
    any_unfetch,
};

// A WAL file differs only in how it reads, writes and truncates.
constexpr sqlite3_io_methods with_wal_io(sqlite3_io_methods methods) {
    methods.xRead = wal_read;
    methods.xWrite = wal_write;
    methods.xTruncate = wal_truncate;
    return methods;
}
const sqlite3_io_methods wal_methods = with_wal_io(main_methods);

constexpr int real_offset = static_cast<int>((sizeof(gathering_file) + 15) / 16 * 16);

int open_file(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* file, int flags, int* out_flags) {
    auto* f = new (file) gathering_file;
    f->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + real_offset);
    f->real->pMethods = nullptr;
    const int rc = base_vfs->xOpen(base_vfs, name, f->real, flags, out_flags);
    if (rc != SQLITE_OK || !f->real->pMethods || f->real->pMethods->iVersion < 3) {
        if (rc == SQLITE_OK && f->real->pMethods) f->real->pMethods->xClose(f->real);
        f->~gathering_file();
        file->pMethods = nullptr;
        return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
    }
    if ((flags & SQLITE_OPEN_MAIN_DB) && name) {
        f->name = name;
        std::lock_guard lock(names_mu);
        main_by_name[name] = f;
    } else if ((flags & SQLITE_OPEN_WAL) && name) {
        std::lock_guard lock(names_mu);
        const auto it = main_by_name.find(sqlite3_filename_database(name));
        if (it != main_by_name.end() && !it->second->wal) {
            f->main = it->second;
            f->main->wal = f;
            f->path = name;
            // Under a file size limit a flush could fail where allocating
            // ahead succeeded (KEEP_SIZE is not checked against it): write
            // straight through, so the limit fails the write that meets it.
            struct rlimit limit {};
            if (::getrlimit(RLIMIT_FSIZE, &limit) != 0 || limit.rlim_cur != RLIM_INFINITY) f->gathers = false;
            linked_wal_files.fetch_add(1, std::memory_order_relaxed);
        }
    }
    file->pMethods = (flags & SQLITE_OPEN_WAL) ? &wal_methods : &main_methods;
    return SQLITE_OK;
}

void register_vfs() {
    base_vfs = sqlite3_vfs_find(nullptr);
    vfs.iVersion = base_vfs->iVersion < 3 ? base_vfs->iVersion : 3;
    vfs.szOsFile = real_offset + base_vfs->szOsFile;
    vfs.mxPathname = base_vfs->mxPathname;
    vfs.zName = "tollgate-gathering";
    vfs.xOpen = open_file;
    vfs.xDelete = [](sqlite3_vfs*, const char* name, int sync_dir) {
        return base_vfs->xDelete(base_vfs, name, sync_dir);
    };
    vfs.xAccess = [](sqlite3_vfs*, const char* name, int flags, int* out) {
        return base_vfs->xAccess(base_vfs, name, flags, out);
    };
    vfs.xFullPathname = [](sqlite3_vfs*, const char* name, int n, char* out) {
        return base_vfs->xFullPathname(base_vfs, name, n, out);
    };
    vfs.xDlOpen = [](sqlite3_vfs*, const char* name) { return base_vfs->xDlOpen(base_vfs, name); };
    vfs.xDlError = [](sqlite3_vfs*, int n, char* out) { base_vfs->xDlError(base_vfs, n, out); };
    vfs.xDlSym = [](sqlite3_vfs*, void* handle, const char* symbol) {
        return base_vfs->xDlSym(base_vfs, handle, symbol);
    };
    vfs.xDlClose = [](sqlite3_vfs*, void* handle) { base_vfs->xDlClose(base_vfs, handle); };
    vfs.xRandomness = [](sqlite3_vfs*, int n, char* out) { return base_vfs->xRandomness(base_vfs, n, out); };
    vfs.xSleep = [](sqlite3_vfs*, int micros) { return base_vfs->xSleep(base_vfs, micros); };
    vfs.xCurrentTime = [](sqlite3_vfs*, double* out) { return base_vfs->xCurrentTime(base_vfs, out); };
    vfs.xGetLastError = [](sqlite3_vfs*, int n, char* out) { return base_vfs->xGetLastError(base_vfs, n, out); };
    if (vfs.iVersion >= 2) {
        vfs.xCurrentTimeInt64 = [](sqlite3_vfs*, sqlite3_int64* out) {
            return base_vfs->xCurrentTimeInt64(base_vfs, out);
        };
    }
    if (vfs.iVersion >= 3) {
        vfs.xSetSystemCall = [](sqlite3_vfs*, const char* name, sqlite3_syscall_ptr p) {
            return base_vfs->xSetSystemCall(base_vfs, name, p);
        };
        vfs.xGetSystemCall = [](sqlite3_vfs*, const char* name) { return base_vfs->xGetSystemCall(base_vfs, name); };
        vfs.xNextSystemCall = [](sqlite3_vfs*, const char* name) { return base_vfs->xNextSystemCall(base_vfs, name); };
    }
    sqlite3_vfs_register(&vfs, 0);
}

}  // namespace

const char* gathering_vfs_name() {
    static std::once_flag once;
    std::call_once(once, register_vfs);
    return vfs.zName;
}

gathering_stats gathering_vfs_stats() {
    return {gathered_writes.load(), flushes.load(), linked_wal_files.load()};
}

}  // namespace tollgate::ledger::sql
