# dfend: PGXS build of a C++17 extension (see ../shared/TOOLCHAIN.md for why
# each line below is here).
EXTENSION = dfend
MODULE_big = dfend
DATA = $(wildcard sql/dfend--*.sql)

CORE_SRCS = $(wildcard src/core/*.cpp)
PG_SRCS = $(wildcard src/pg/*.cpp)
OBJS = $(CORE_SRCS:.cpp=.o) $(PG_SRCS:.cpp=.o)

# Regression tests: sql/NAME.sql with expected/NAME.out (sql/dfend--*.sql are
# the extension's install and upgrade scripts). test/run-tests.sh runs them
# all in a cluster it configures (it sets DFEND_EMULATOR_URL). A bare
# `make installcheck` against a running server starts its own emulator
# (test/installcheck.sh) and skips the files that need the runner's setup:
#   tls: three more emulators serving certificates from a private CA;
#   stats: shared-memory statistics, which need shared_preload_libraries.
REGRESS = setup register reads validation errors retries secrecy tls cancel attach sync fields status stats backfill replies latin1 missing attacks bulk lifecycle
REGRESS_NEEDS_RUNNER = tls stats
REGRESS_OPTS = --load-extension=dfend
ifndef DFEND_EMULATOR_URL
REGRESS := $(filter-out $(REGRESS_NEEDS_RUNNER),$(REGRESS))
endif

# The distribution's version, for make dist (PGXN's META.json).
DISTVERSION = $(shell sed -n 's/^  "version": "\(.*\)",$$/\1/p' META.json)

PG_CPPFLAGS = -I$(srcdir)/src
PG_CXXFLAGS = -std=c++17 -Wno-register -Wall -Wextra -Wno-unused-parameter
SHLIB_LINK = -lcurl -lstdc++
EXTRA_CLEAN = test/unit/unit_tests test/fuzz/fuzz_decoder test/fuzz/corpus-run

# Debian builds PostgreSQL with LLVM: without this PGXS compiles every .cpp
# to bitcode with clang-14 and without our flags.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Debian's PGXS does not track header dependencies.
CORE_HEADERS = $(wildcard src/core/*.hpp)
PG_HEADERS = $(wildcard src/pg/*.hpp)
$(OBJS): $(CORE_HEADERS)
$(PG_SRCS:.cpp=.o): $(PG_HEADERS)

# Wraps pg_regress itself (PG 17's pg_regress_installcheck starts with an echo).
ifndef DFEND_EMULATOR_URL
PG_REGRESS_BIN = $(top_builddir)/src/test/regress/pg_regress
pg_regress_installcheck := $(subst $(PG_REGRESS_BIN),$(srcdir)/test/installcheck.sh $(PG_REGRESS_BIN),$(pg_regress_installcheck))
endif

# A source archive of the committed tree (HEAD), as pgvector does: zip for
# PGXN, tar.gz for distributions.
.PHONY: dist
dist:
	mkdir -p dist
	git archive --format zip --prefix=$(EXTENSION)-$(DISTVERSION)/ -o dist/$(EXTENSION)-$(DISTVERSION).zip HEAD
	git archive --format tar.gz --prefix=$(EXTENSION)-$(DISTVERSION)/ -o dist/$(EXTENSION)-$(DISTVERSION).tar.gz HEAD

# --- tests outside PostgreSQL -------------------------------------------
# Unit tests run an in-process cpp-httplib server; Debian's cpp-httplib is a
# library whose defines must match (pkg-config).
GTEST_LIBS = -lgtest -lgtest_main -pthread
HTTPLIB_CFLAGS = $(shell pkg-config --cflags cpp-httplib)
HTTPLIB_LIBS = $(shell pkg-config --libs cpp-httplib) -lssl -lcrypto
CORE_TEST_CXXFLAGS = -std=c++17 -O1 -g -Wall -Wextra -Isrc $(HTTPLIB_CFLAGS)

test/unit/unit_tests: $(wildcard test/unit/*.cpp test/unit/*.hpp) $(CORE_SRCS) $(CORE_HEADERS)
	$(CXX) $(CORE_TEST_CXXFLAGS) -o $@ $(wildcard test/unit/*.cpp) $(CORE_SRCS) -lcurl $(HTTPLIB_LIBS) $(GTEST_LIBS)

test/fuzz/fuzz_decoder: test/fuzz/fuzz_decoder.cpp test/unit/utf8_check.hpp $(CORE_SRCS) $(CORE_HEADERS)
	clang++-14 -std=c++17 -g -O1 -Isrc -fsanitize=fuzzer,address,undefined -o $@ test/fuzz/fuzz_decoder.cpp $(CORE_SRCS) -lcurl

.PHONY: emulator unit fuzz
emulator:
	$(MAKE) -C test/emulator dfend-emulator
unit: test/unit/unit_tests
fuzz: test/fuzz/fuzz_decoder
