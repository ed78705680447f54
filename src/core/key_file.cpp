#include "key_file.hpp"

#include "error.hpp"
#include "validation.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

namespace dfend {

namespace {

Error key_file_error(const std::string &path, const std::string &why,
                     std::string hint = {})
{
    return Error(ErrorKind::Configuration,
                 "could not use DFend API key file \"" + path + "\"", why, std::move(hint));
}

} // namespace

const std::string &KeyFileCache::get(const std::string &path)
{
    struct stat info;
    if (stat(path.c_str(), &info) != 0)
        throw key_file_error(path, std::string(std::strerror(errno)) + ".");
    if (!S_ISREG(info.st_mode))
        throw key_file_error(path, "It is not a regular file.");
    bool owner_root = info.st_uid == 0;
    // As PostgreSQL's ssl_key_file: a root-owned file may be group-readable,
    // never group-writable (a writer could swap in a key of their own).
    const mode_t forbidden = owner_root ? (S_IWGRP | S_IXGRP | S_IRWXO) : (S_IRWXG | S_IRWXO);
    if ((info.st_mode & forbidden) != 0)
        throw key_file_error(path, "The file can be read or written by other users.",
                             "Run chmod 600 on the file (640 is allowed when root owns it).");
    if (path == path_ && info.st_dev == device_ && info.st_ino == inode_ &&
        info.st_size == size_ && info.st_mtim.tv_sec == modified_.tv_sec &&
        info.st_mtim.tv_nsec == modified_.tv_nsec)
        return key_;

    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw key_file_error(path, std::string(std::strerror(errno)) + ".");
    std::ostringstream content;
    content << in.rdbuf();
    std::string key = content.str();
    const char *space = " \t\r\n";
    key.erase(0, key.find_first_not_of(space) == std::string::npos
                     ? key.size()
                     : key.find_first_not_of(space));
    key.erase(key.find_last_not_of(space) + 1);
    if (key.empty())
        throw key_file_error(path, "The file is empty.");
    if (auto problem = api_key_problem(key))
        throw key_file_error(path, *problem);

    path_ = path;
    device_ = info.st_dev;
    inode_ = info.st_ino;
    size_ = info.st_size;
    modified_ = info.st_mtim;
    key_ = std::move(key);
    return key_;
}

} // namespace dfend
