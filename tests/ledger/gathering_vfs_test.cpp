// The gathering VFS (ledger/src/gathering_vfs.cpp) on real files: a commit's
// WAL frames go out in a handful of writes, are visible to other connections
// and survive SIGKILL the moment COMMIT returns; frames of a transaction that
// rolled back never spoil later commits; WAL space is allocated ahead.
#include "gathering_vfs.hpp"

#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <string>

#include "test_support.hpp"

namespace {

using tollgate::ledger::sql::gathering_vfs_name;
using tollgate::ledger::sql::gathering_vfs_stats;
using tollgate::testing::temp_dir;

struct connection {
    sqlite3* db = nullptr;
    explicit connection(const std::string& path, const char* vfs) {
        REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) == SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
    }
    ~connection() { sqlite3_close_v2(db); }
    int exec(const std::string& sql) { return sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr); }
    std::int64_t scalar(const std::string& sql) {
        sqlite3_stmt* s = nullptr;
        REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
        REQUIRE(sqlite3_step(s) == SQLITE_ROW);
        const auto v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
    }
    std::string text(const std::string& sql) {
        sqlite3_stmt* s = nullptr;
        REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
        REQUIRE(sqlite3_step(s) == SQLITE_ROW);
        std::string v(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)));
        sqlite3_finalize(s);
        return v;
    }
};

// As the ledger's writer is set up (ledger/src/open.cpp).
void make_wal_database(connection& c) {
    REQUIRE(c.exec("PRAGMA page_size = 2048") == SQLITE_OK);
    REQUIRE(c.exec("PRAGMA journal_mode = WAL") == SQLITE_OK);
    REQUIRE(c.exec("PRAGMA synchronous = NORMAL") == SQLITE_OK);
    REQUIRE(c.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)") == SQLITE_OK);
}

// A new database set up that way, closed again.
std::string new_database(temp_dir& dir, const char* name) {
    const auto path = dir.file(name);
    connection setup(path, gathering_vfs_name());
    make_wal_database(setup);
    return path;
}

// `rows` INSERTs of 1,500 bytes each: about one 2 KiB page a row.
std::string insert_sql(int first_id, int rows, char fill) {
    std::string sql;
    for (int i = 0; i < rows; ++i) {
        sql += "INSERT INTO t VALUES (" + std::to_string(first_id + i) + ", printf('%.1500c', '" + fill + "'));";
    }
    return sql;
}

// One transaction of `rows` such rows.
int insert_rows(connection& c, int first_id, int rows) {
    return c.exec("BEGIN;" + insert_sql(first_id, rows, 'x') + "COMMIT;");
}

}  // namespace

TEST_CASE("a commit's WAL frames go out in a few writes and are visible to another connection", "[ledger][vfs]") {
    temp_dir dir;
    const auto path = dir.file("g.db");
    connection writer(path, gathering_vfs_name());
    make_wal_database(writer);
    REQUIRE(insert_rows(writer, 1, 1) == SQLITE_OK);  // the WAL exists, with its header

    const auto before = gathering_vfs_stats();
    REQUIRE(insert_rows(writer, 100, 40) == SQLITE_OK);
    const auto after = gathering_vfs_stats();
    const auto gathered = after.gathered_writes - before.gathered_writes;
    const auto flushes = after.flushes - before.flushes;
    // 40 pages of rows plus the B-tree's own pages, each frame a header and a
    // page: at least 80 writes from SQLite.
    CHECK(gathered >= 80);
    // ~90 KB of frames leave in 64 KiB writes: two or three, not ~80.
    CHECK(flushes >= 1);
    CHECK(flushes <= 4);
    CHECK(after.linked_wal_files > 0);

    // Another connection, through the default VFS, sees the commit at once.
    connection reader(path, nullptr);
    CHECK(reader.scalar("SELECT count(*) FROM t") == 41);
    CHECK(reader.text("PRAGMA integrity_check") == "ok");
}

TEST_CASE("a commit is in the file when COMMIT returns: it survives SIGKILL", "[ledger][vfs]") {
    temp_dir dir;
    const auto path = new_database(dir, "k.db");
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // No Catch2 in the child: plain calls, then the signal right after
        // COMMIT returned, with the connection still open.
        close(ready[0]);
        sqlite3* db = nullptr;
        if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, gathering_vfs_name()) != SQLITE_OK) _exit(2);
        // synchronous = NORMAL, as the ledger runs: no sync at COMMIT, so
        // only the VFS's own flush puts the frames in the file.
        const std::string sql = "PRAGMA synchronous = NORMAL; BEGIN;" + insert_sql(500, 10, 'k') + "COMMIT;";
        if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) _exit(3);
        const char done = 'c';
        if (write(ready[1], &done, 1) != 1) _exit(4);
        raise(SIGKILL);
        _exit(5);
    }
    close(ready[1]);
    char got = 0;
    CHECK(read(ready[0], &got, 1) == 1);
    close(ready[0]);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);
    CHECK(got == 'c');

    connection after(path, nullptr);  // recovers the WAL the killed process left
    CHECK(after.scalar("SELECT count(*) FROM t WHERE id BETWEEN 500 AND 509") == 10);
    CHECK(after.text("PRAGMA integrity_check") == "ok");
}

TEST_CASE("frames of a transaction that rolled back never land over a later commit", "[ledger][vfs]") {
    temp_dir dir;
    const auto path = dir.file("r.db");
    {
        connection first(path, gathering_vfs_name());
        make_wal_database(first);
        REQUIRE(insert_rows(first, 1, 1) == SQLITE_OK);
        // A page cache of a few pages: a big transaction spills frames to
        // the WAL before it ends. Then it rolls back.
        REQUIRE(first.exec("PRAGMA cache_size = 4") == SQLITE_OK);
        const auto before = gathering_vfs_stats();
        REQUIRE(first.exec("BEGIN;" + insert_sql(1000, 60, 'r')) == SQLITE_OK);
        CHECK(gathering_vfs_stats().gathered_writes > before.gathered_writes);  // it did spill
        REQUIRE(first.exec("ROLLBACK") == SQLITE_OK);

        // Another connection commits where the spilled frames were, while
        // the first stays open; then the first commits again.
        connection second(path, gathering_vfs_name());
        REQUIRE(insert_rows(second, 2000, 10) == SQLITE_OK);
        REQUIRE(insert_rows(first, 3000, 5) == SQLITE_OK);
    }
    connection after(path, nullptr);
    CHECK(after.text("PRAGMA integrity_check") == "ok");
    CHECK(after.scalar("SELECT count(*) FROM t") == 16);
    CHECK(after.scalar("SELECT count(*) FROM t WHERE id >= 1000 AND id < 1060") == 0);
    CHECK(after.scalar("SELECT count(*) FROM t WHERE id BETWEEN 2000 AND 2009") == 10);
    CHECK(after.scalar("SELECT count(*) FROM t WHERE id BETWEEN 3000 AND 3004") == 5);
}

TEST_CASE("WAL space is allocated ahead of the frames, the file's size unchanged", "[ledger][vfs]") {
    temp_dir dir;
    const auto path = dir.file("a.db");
    connection writer(path, gathering_vfs_name());
    make_wal_database(writer);
    REQUIRE(insert_rows(writer, 1, 3) == SQLITE_OK);
    struct stat st {};
    REQUIRE(stat((path + "-wal").c_str(), &st) == 0);
    CHECK(st.st_size > 0);
    CHECK(st.st_size < (1 << 20));
    // The first MiB is allocated (a file system without fallocate would
    // show only the written blocks; ext4 and tmpfs, where this runs, have it).
    CHECK(static_cast<std::int64_t>(st.st_blocks) * 512 >= (1 << 20));
}

TEST_CASE("a write the file cannot take fails the commit; it does not stop the process", "[ledger][vfs]") {
    temp_dir dir;
    const auto path = new_database(dir, "f.db");
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // A file size limit: writes past 256 KiB fail (EFBIG, the signal
        // ignored), as they would on a full disk.
        signal(SIGXFSZ, SIG_IGN);
        const rlimit limit{256 << 10, 256 << 10};
        if (setrlimit(RLIMIT_FSIZE, &limit) != 0) _exit(2);
        sqlite3* db = nullptr;
        if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, gathering_vfs_name()) != SQLITE_OK) _exit(3);
        sqlite3_exec(db, "PRAGMA synchronous = NORMAL", nullptr, nullptr, nullptr);
        for (int round = 0; round < 100; ++round) {
            const std::string sql = "BEGIN;" + insert_sql(10000 + round * 10, 10, 'f') + "COMMIT;";
            const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
            if (rc != SQLITE_OK) {
                sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
                _exit((rc & 0xff) == SQLITE_FULL || (rc & 0xff) == SQLITE_IOERR ? 0 : 4);
            }
        }
        _exit(5);  // the limit was never met
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    INFO("status " << status);
    REQUIRE(WIFEXITED(status));  // not SIGABRT
    CHECK(WEXITSTATUS(status) == 0);

    // What was committed before the failure is whole.
    connection after(path, nullptr);
    CHECK(after.text("PRAGMA integrity_check") == "ok");
    CHECK(after.scalar("SELECT count(*) FROM t") % 10 == 0);
    CHECK(after.scalar("SELECT count(*) FROM t") > 0);
}
