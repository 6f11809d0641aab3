#include "sqlite.hpp"

#include "gathering_vfs.hpp"

#include <sqlite3.h>

#include <fmt/format.h>

#include <mutex>

namespace tollgate::ledger::sql {

bool error::is_corruption() const {
    const int primary = code_ & 0xff;
    return primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT;
}

namespace {
[[noreturn]] void fail(sqlite3* db, int code, std::string_view context) {
    throw error(code, fmt::format("sqlite: {}: {}", context, db ? sqlite3_errmsg(db) : sqlite3_errstr(code)));
}
}  // namespace

statement::statement(sqlite3* db, std::string_view sql) : db_(db) {
    const int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                                      &stmt_, nullptr);
    if (rc != SQLITE_OK) fail(db, rc, sql.substr(0, 80));
}

statement::~statement() { sqlite3_finalize(stmt_); }

statement& statement::bind(int index, std::int64_t value) {
    if (const int rc = sqlite3_bind_int64(stmt_, index, value); rc != SQLITE_OK) fail(db_, rc, "bind");
    return *this;
}

statement& statement::bind(int index, std::string_view value) {
    const int rc = sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
    if (rc != SQLITE_OK) fail(db_, rc, "bind");
    return *this;
}

statement& statement::bind_blob(int index, std::string_view bytes) {
    const int rc = sqlite3_bind_blob64(stmt_, index, bytes.data(), bytes.size(), SQLITE_TRANSIENT);
    if (rc != SQLITE_OK) fail(db_, rc, "bind");
    return *this;
}

statement& statement::bind_null(int index) {
    if (const int rc = sqlite3_bind_null(stmt_, index); rc != SQLITE_OK) fail(db_, rc, "bind");
    return *this;
}

bool statement::step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    const std::string sql = sqlite3_sql(stmt_) ? sqlite3_sql(stmt_) : "";
    sqlite3_reset(stmt_);
    fail(db_, rc, std::string_view(sql).substr(0, 80));
}

void statement::run() {
    while (step()) {
    }
    reset();
}

void statement::reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
}

std::int64_t statement::int64(int column) const { return sqlite3_column_int64(stmt_, column); }

std::string statement::text(int column) const {
    const auto* p = sqlite3_column_text(stmt_, column);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)))
             : std::string();
}

std::string statement::blob(int column) const {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, column));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column))) : std::string();
}

bool statement::is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

std::optional<std::int64_t> statement::optional_int64(int column) const {
    if (is_null(column)) return std::nullopt;
    return int64(column);
}

namespace {
// Process-wide settings, once, before the first connection. Memory
// statistics take a global mutex on every allocation; nothing reads them.
void configure_library() {
    static std::once_flag once;
    std::call_once(once, [] {
        sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
        sqlite3_initialize();
    });
}
}  // namespace

database::database(const std::string& path, mode m) {
    configure_library();
    const int flags = (m == mode::read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                      SQLITE_OPEN_NOMUTEX;
    const int rc = sqlite3_open_v2(path.c_str(), &db_, flags, gathering_vfs_name());
    if (rc != SQLITE_OK) {
        const std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
        sqlite3_close_v2(db_);
        db_ = nullptr;
        throw error(rc, fmt::format("sqlite: cannot open {}: {}", path, message));
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, 5000);
}

database::~database() {
    cache_.clear();
    rows_cache_.clear();
    sqlite3_close_v2(db_);
}

void database::exec(std::string_view sql) {
    const std::string owned(sql);
    char* message = nullptr;
    const int rc = sqlite3_exec(db_, owned.c_str(), nullptr, nullptr, &message);
    if (rc != SQLITE_OK) {
        const std::string what = message ? message : sqlite3_errstr(rc);
        sqlite3_free(message);
        throw error(rc, fmt::format("sqlite: {}", what));
    }
}

statement_use database::prepare(const char* sql) {
    auto& slot = cache_[sql];
    if (!slot) slot = std::make_unique<statement>(db_, sql);
    return statement_use(*slot);
}

statement_use database::prepare_rows(const char* head, const char* tail, int columns, int rows) {
    auto& slot = rows_cache_[{head, rows}];
    if (!slot) {
        std::string group = "(";
        for (int c = 0; c < columns; ++c) group += c ? ",?" : "?";
        group += ")";
        std::string sql = head;
        for (int r = 0; r < rows; ++r) {
            if (r) sql += ',';
            sql += group;
        }
        sql += tail;
        slot = std::make_unique<statement>(db_, sql);
    }
    return statement_use(*slot);
}

std::int64_t database::scalar(const char* sql) {
    auto s = prepare(sql);
    return s->step() ? s->int64(0) : 0;
}

// BEGIN and COMMIT go through the statement cache: sqlite3_exec would parse
// them again on every batch.
write_transaction::write_transaction(database& db) : db_(db) { db_.prepare("BEGIN IMMEDIATE")->run(); }

write_transaction::~write_transaction() {
    if (!done_) {
        try {
            db_.exec("ROLLBACK");
        } catch (const error&) {
            // The transaction may already be gone (SQLite rolls back by itself
            // on some I/O errors); nothing more to undo.
        }
    }
}

void write_transaction::commit() {
    db_.prepare("COMMIT")->run();
    done_ = true;
}

}  // namespace tollgate::ledger::sql
