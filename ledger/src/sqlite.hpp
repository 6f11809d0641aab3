// A thin RAII layer over the SQLite C API, private to ledger/src. Errors
// throw sql::error: inside the ledger a failing statement is exceptional (disk
// full, I/O error, corruption) and is turned into a named outcome at the
// boundary (open_error, result::storage_failed).
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

struct sqlite3;
struct sqlite3_stmt;

namespace tollgate::ledger::sql {

class error : public std::runtime_error {
public:
    error(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
    int code() const { return code_; }
    bool is_corruption() const;  // not a database, corrupt, truncated
private:
    int code_;
};

class statement {
public:
    statement(sqlite3* db, std::string_view sql);
    ~statement();
    statement(const statement&) = delete;
    statement& operator=(const statement&) = delete;

    statement& bind(int index, std::int64_t value);
    statement& bind(int index, int value) { return bind(index, static_cast<std::int64_t>(value)); }
    statement& bind(int index, std::string_view value);
    statement& bind(int index, const std::string& value) { return bind(index, std::string_view(value)); }
    statement& bind(int index, const char* value) { return bind(index, std::string_view(value)); }
    statement& bind_blob(int index, std::string_view bytes);
    statement& bind_null(int index);
    template <class T>
    statement& bind(int index, const std::optional<T>& value) {
        return value ? bind(index, *value) : bind_null(index);
    }

    bool step();  // true: a row is ready; false: done
    void run();   // step to completion, then reset
    void reset();

    std::int64_t int64(int column) const;
    std::string text(int column) const;
    std::string blob(int column) const;
    bool is_null(int column) const;
    std::optional<std::int64_t> optional_int64(int column) const;

private:
    sqlite3* db_;
    sqlite3_stmt* stmt_ = nullptr;
};

// Resets a cached statement when the scope ends, so an exception in the
// middle of a step loop never leaves a read transaction open.
class statement_use {
public:
    explicit statement_use(statement& s) : s_(s) {}
    ~statement_use() { s_.reset(); }
    statement* operator->() { return &s_; }
    statement& operator*() { return s_; }
private:
    statement& s_;
};

class database {
public:
    enum class mode { read_write_create, read_only };
    database(const std::string& path, mode m);
    ~database();
    database(const database&) = delete;
    database& operator=(const database&) = delete;

    void exec(std::string_view sql);
    // Cached prepared statement; `sql` must outlive the database (a literal).
    statement_use prepare(const char* sql);
    // `head` + `rows` groups of `columns` placeholders + `tail`: one
    // statement writes many rows (a third less work per row than one
    // statement each). Cached by (head, rows); `head` must be a literal.
    statement_use prepare_rows(const char* head, const char* tail, int columns, int rows);
    std::int64_t scalar(const char* sql);
    sqlite3* handle() { return db_; }

private:
    sqlite3* db_ = nullptr;
    std::unordered_map<const char*, std::unique_ptr<statement>> cache_;
    std::map<std::pair<const char*, int>, std::unique_ptr<statement>> rows_cache_;
};

inline constexpr int rows_per_statement = 32;

// Writes `rows` with statements of up to rows_per_statement rows each.
// `bind(statement, first_parameter, row)` binds one row's `columns` values.
template <class Rows, class Bind>
void write_rows(database& db, const char* head, const char* tail, int columns, const Rows& rows, Bind bind) {
    auto it = std::begin(rows);
    std::size_t left = std::size(rows);
    while (left > 0) {
        const int n = static_cast<int>(left < rows_per_statement ? left : rows_per_statement);
        auto s = db.prepare_rows(head, tail, columns, n);
        for (int r = 0; r < n; ++r, ++it) bind(*s, r * columns + 1, *it);
        s->run();
        left -= static_cast<std::size_t>(n);
    }
}

// BEGIN IMMEDIATE ... COMMIT, rolled back when the scope exits by exception.
class write_transaction {
public:
    explicit write_transaction(database& db);
    ~write_transaction();
    void commit();
private:
    database& db_;
    bool done_ = false;
};

}  // namespace tollgate::ledger::sql
