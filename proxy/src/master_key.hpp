// The master key's life beside the ledger: opening the secrets a database
// was sealed with, and replacing the master key (`rotate-master-key`, and
// the admin API's POST /api/v1/master-key/rotate).
#pragma once

#include <optional>
#include <string>

#include "secrets.hpp"
#include "tollgate/ledger/ledger.hpp"

namespace tollgate::proxy {

// Finishes a rotation a crash cut short (see rotate_master_key), opens the
// key file (creating it on a first start) and adopts the database's
// key-hashing key. nullopt with `error` set when the key file does not
// belong to this database.
std::optional<secrets> open_secrets(const std::string& key_file, ledger::ledger& l, std::string& error);

struct rotation {
    bool ok = false;
    std::string error;
    std::int64_t resealed = 0;  // blobs re-encrypted
};

// A new random master key: written beside the old one as `<file>.new`
// (0600, synced), every sealed blob re-encrypted under it in one ledger
// commit, then renamed over the old file. A crash between the commit and
// the rename is finished by the next open_secrets (it sees which key opens
// the database). `live` seals with the new key afterwards.
rotation rotate_master_key(const std::string& key_file, ledger::ledger& l, secrets& live);

}  // namespace tollgate::proxy
