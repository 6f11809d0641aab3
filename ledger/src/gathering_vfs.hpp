// A SQLite VFS that writes each commit's WAL frames with one system call
// instead of two per frame. See gathering_vfs.cpp for when the gathered
// bytes reach the file, and why a commit is as durable as without it.
#pragma once

#include <cstdint>

namespace tollgate::ledger::sql {

// Registers the VFS (once, not as the default) and returns its name, for
// sqlite3_open_v2.
const char* gathering_vfs_name();

// Counters over the whole process, for tests and benches.
struct gathering_stats {
    std::uint64_t gathered_writes = 0;   // WAL writes held back in memory
    std::uint64_t flushes = 0;           // writes of gathered bytes to a WAL file
    std::uint64_t linked_wal_files = 0;  // WAL files opened that gather
};
gathering_stats gathering_vfs_stats();

}  // namespace tollgate::ledger::sql
