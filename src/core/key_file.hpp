// Reads the API key from a file (dfend.api_key_file), re-reading only when the
// file changes. The file route keeps the key out of every catalog, view and
// log line, since PostgreSQL only ever sees the path.
#pragma once
#include "pure.hpp"

#include <ctime>
#include <string>
#include <sys/types.h>

namespace dfend {

class KeyFileCache {
  public:
    // The key (surrounding white space trimmed). Throws Error(Configuration)
    // when the file cannot be read, is empty, holds an unusable key, or can
    // be read by other users (group access is allowed for root-owned files,
    // as for PostgreSQL's ssl_key_file).
    const std::string &get(const std::string &path);

  private:
    std::string path_;
    dev_t device_ = 0;
    ino_t inode_ = 0;
    off_t size_ = -1;
    struct timespec modified_ {};
    std::string key_;
};

} // namespace dfend
