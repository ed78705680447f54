// KeyFileCache: reading, trimming, re-reading on change, and the permission
// rules (as for PostgreSQL's ssl_key_file: 0600, or 0640 when root owns it).
// The tests run as root, so files can be handed to another owner with chown.
#include "core/error.hpp"
#include "core/key_file.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

using namespace dfend;

namespace {

constexpr uid_t kOtherUid = 65534; // nobody
constexpr gid_t kOtherGid = 65534;

class KeyFileTest : public ::testing::Test {
  protected:
    void SetUp() override
    {
        char pattern[] = "/tmp/dfend-key-test-XXXXXX";
        ASSERT_NE(::mkdtemp(pattern), nullptr) << std::strerror(errno);
        dir_ = pattern;
        path_ = dir_ + "/key";
    }
    void TearDown() override
    {
        std::string command = "rm -rf '" + dir_ + "'";
        EXPECT_EQ(std::system(command.c_str()), 0);
    }

    // Writes `content` in place (same inode) and sets `mode` and owner.
    void write(const std::string &path, const std::string &content, mode_t mode = 0600,
               uid_t uid = 0, gid_t gid = 0)
    {
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ASSERT_GE(fd, 0) << std::strerror(errno);
        ASSERT_EQ(::write(fd, content.data(), content.size()),
                  static_cast<ssize_t>(content.size()));
        ASSERT_EQ(::close(fd), 0);
        ASSERT_EQ(::chown(path.c_str(), uid, gid), 0) << std::strerror(errno);
        ASSERT_EQ(::chmod(path.c_str(), mode), 0) << std::strerror(errno); // after chown
    }
    void write(const std::string &content, mode_t mode = 0600, uid_t uid = 0)
    {
        write(path_, content, mode, uid, uid == 0 ? 0 : kOtherGid);
    }

    Error get_error(const std::string &path)
    {
        try {
            const std::string &key = cache_.get(path);
            ADD_FAILURE() << "accepted " << path << " (key of " << key.size() << " bytes)";
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), ErrorKind::Configuration) << e.message();
            EXPECT_NE(e.message().find(path), std::string::npos) << e.message();
            return e;
        }
        return Error(ErrorKind::Internal, "accepted");
    }
    Error get_error() { return get_error(path_); }

    void expect_no_text(const Error &e, const std::string &text)
    {
        EXPECT_EQ(e.message().find(text), std::string::npos) << e.message();
        EXPECT_EQ(e.detail().find(text), std::string::npos) << e.detail();
        EXPECT_EQ(e.hint().find(text), std::string::npos) << e.hint();
    }

    std::string dir_;
    std::string path_;
    KeyFileCache cache_;
};

} // namespace

TEST_F(KeyFileTest, ReadsAndTrims)
{
    write("  \t sk_live_ABCdef123 \r\n\n");
    EXPECT_EQ(cache_.get(path_), "sk_live_ABCdef123");
    write("sk_live_nonewline");
    EXPECT_EQ(cache_.get(path_), "sk_live_nonewline");
}

TEST_F(KeyFileTest, ReReadsWhenTheContentChanges)
{
    write("sk_test_first\n");
    EXPECT_EQ(cache_.get(path_), "sk_test_first");
    EXPECT_EQ(cache_.get(path_), "sk_test_first"); // cached

    // In place, another length.
    write("sk_test_the_second_key\n");
    EXPECT_EQ(cache_.get(path_), "sk_test_the_second_key");

    // In place, same length, another modification time.
    write("sk_test_the_third__key\n");
    struct timespec times[2] = {{0, UTIME_OMIT}, {1000000000, 123}};
    ASSERT_EQ(::utimensat(AT_FDCWD, path_.c_str(), times, 0), 0);
    EXPECT_EQ(cache_.get(path_), "sk_test_the_third__key");

    // Replaced by rename (how editors and config tools write): a new inode.
    const std::string next = dir_ + "/key.new";
    write(next, "sk_test_renamed_key_01\n", 0600, 0, 0);
    ASSERT_EQ(::utimensat(AT_FDCWD, next.c_str(), times, 0), 0); // same mtime as before
    ASSERT_EQ(std::rename(next.c_str(), path_.c_str()), 0);
    EXPECT_EQ(cache_.get(path_), "sk_test_renamed_key_01");

    // Another path.
    const std::string other = dir_ + "/other";
    write(other, "sk_test_other\n", 0600, 0, 0);
    EXPECT_EQ(cache_.get(other), "sk_test_other");
    EXPECT_EQ(cache_.get(path_), "sk_test_renamed_key_01");
}

TEST_F(KeyFileTest, PermissionRulesForRootOwnedFiles)
{
    for (mode_t mode : {0600, 0400, 0640, 0440, 0700}) {
        write("sk_test_root\n", mode, 0);
        EXPECT_EQ(cache_.get(path_), "sk_test_root") << std::oct << mode;
    }
    for (mode_t mode : {0604, 0644, 0606, 0601, 0666, 0660, 0620, 0610, 0670}) {
        write("sk_test_root\n", mode, 0);
        Error e = get_error();
        EXPECT_NE(e.detail().find("other users"), std::string::npos) << std::oct << mode;
        EXPECT_NE(e.hint().find("chmod 600"), std::string::npos);
        expect_no_text(e, "sk_test_root");
    }
}

TEST_F(KeyFileTest, PermissionRulesForOtherOwners)
{
    write("sk_test_nobody\n", 0600, kOtherUid);
    EXPECT_EQ(cache_.get(path_), "sk_test_nobody");
    for (mode_t mode : {0640, 0644, 0604, 0660, 0610}) {
        write("sk_test_nobody\n", mode, kOtherUid);
        get_error();
    }
}

TEST_F(KeyFileTest, ACachedKeyIsNotServedOnceTheFileIsExposed)
{
    write("sk_test_cached\n", 0600);
    EXPECT_EQ(cache_.get(path_), "sk_test_cached");
    ASSERT_EQ(::chmod(path_.c_str(), 0644), 0);
    get_error();
    ASSERT_EQ(::chmod(path_.c_str(), 0600), 0);
    EXPECT_EQ(cache_.get(path_), "sk_test_cached");
    ASSERT_EQ(::unlink(path_.c_str()), 0);
    get_error();
}

TEST_F(KeyFileTest, MissingEmptyAndBlankFilesAreRefused)
{
    Error e = get_error(dir_ + "/absent");
    EXPECT_NE(e.detail().find("No such file"), std::string::npos) << e.detail();
    write("");
    e = get_error();
    EXPECT_NE(e.detail().find("empty"), std::string::npos) << e.detail();
    write(" \n\t\r\n ");
    e = get_error();
    EXPECT_NE(e.detail().find("empty"), std::string::npos) << e.detail();
}

TEST_F(KeyFileTest, UnusableKeysAreRefusedWithoutQuotingThem)
{
    for (const std::string &content :
         {std::string("sk_test_HALF1 sk_test_HALF2\n"), std::string("sk_test_HALF1\nsk_test_HALF2\n"),
          std::string("sk_test_HALF1\r\nX-Evil: sk_test_HALF2"), std::string("sk_test_HALF1\0sk_test_HALF2", 27),
          std::string("sk_test_HALF1\xC3\xA9sk_test_HALF2")}) {
        write(content);
        Error e = get_error();
        expect_no_text(e, "HALF1");
        expect_no_text(e, "HALF2");
    }
}

TEST_F(KeyFileTest, DirectoriesAndSpecialFilesAreRefused)
{
    Error e = get_error(dir_);
    EXPECT_NE(e.detail().find("not a regular file"), std::string::npos) << e.detail();
    get_error("/dev/null");
    const std::string fifo = dir_ + "/fifo";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    get_error(fifo); // must not block on open
}

TEST_F(KeyFileTest, SymlinkToAnAcceptableFileIsFollowed)
{
    write("sk_test_target\n");
    const std::string link = dir_ + "/link";
    ASSERT_EQ(::symlink(path_.c_str(), link.c_str()), 0);
    EXPECT_EQ(cache_.get(link), "sk_test_target");
}
