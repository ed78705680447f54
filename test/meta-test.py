#!/usr/bin/env python3
"""Validates META.json against the PGXN Meta Spec 1.0.0 (the parts a
release needs: https://pgxn.org/spec/), offline. Prints TAP lines
("ok - ..." / "not ok - ...") like the scenario scripts."""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
failed = 0


def check(description, condition):
    global failed
    print(("ok - " if condition else "not ok - ") + description)
    if not condition:
        failed += 1


SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+)?$")
LICENSES = {"agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd",
            "freebsd", "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1",
            "lgpl_3_0", "mit", "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5",
            "postgresql", "qpl_1_0", "ssleay", "sun", "zlib", "open_source",
            "restricted", "unrestricted", "unknown"}
PHASES = {"configure", "build", "test", "runtime", "develop"}
RELATIONS = {"requires", "recommends", "suggests", "conflicts"}


def version_tuple(text):
    return tuple(int(part) for part in text.split("-")[0].split("."))


try:
    with open(os.path.join(ROOT, "META.json"), encoding="utf-8") as f:
        meta = json.load(f)
    check("META.json is valid JSON", True)
except (OSError, ValueError) as error:
    check("META.json is valid JSON (%s)" % error, False)
    sys.exit(1)

for key in ("name", "abstract", "version", "maintainer", "license", "provides", "meta-spec"):
    check("required key %s is present" % key, key in meta)
check("meta-spec version is 1.0.0", meta.get("meta-spec", {}).get("version") == "1.0.0")
check("name is dfend, as in dfend.control", meta.get("name") == "dfend")
check("version is semantic", bool(SEMVER.match(str(meta.get("version", "")))))
check("maintainer is a string or a list of strings",
      isinstance(meta.get("maintainer"), str)
      or (isinstance(meta.get("maintainer"), list) and all(isinstance(m, str) for m in meta["maintainer"])))
check("license is one PGXN knows", meta.get("license") in LICENSES)
check("license is postgresql, as LICENSE says", meta.get("license") == "postgresql"
      and "PostgreSQL License" in open(os.path.join(ROOT, "LICENSE"), encoding="utf-8").read())
check("release_status is stable, testing or unstable",
      meta.get("release_status", "stable") in {"stable", "testing", "unstable"})

provides = meta.get("provides", {})
check("provides lists dfend", "dfend" in provides)
for extension, entry in provides.items():
    check("provides.%s has file and version" % extension, "file" in entry and "version" in entry)
    check("provides.%s.version is semantic" % extension, bool(SEMVER.match(str(entry.get("version", "")))))
    check("provides.%s.version is the distribution's" % extension, entry.get("version") == meta.get("version"))
    if "docfile" in entry:
        check("provides.%s.docfile exists" % extension, os.path.isfile(os.path.join(ROOT, entry["docfile"])))

control = open(os.path.join(ROOT, "dfend.control"), encoding="utf-8").read()
default = re.search(r"default_version\s*=\s*'([^']*)'", control).group(1)
version_hpp = open(os.path.join(ROOT, "src", "core", "version.hpp"), encoding="utf-8").read()
library = re.search(r'kVersion = "([^"]*)"', version_hpp).group(1)
check("the library's version (src/core/version.hpp) %s is dfend.control's %s" % (library, default),
      library == default)
served = re.findall(r'"([0-9]+\.[0-9]+\.[0-9]+)"', version_hpp.split("kServedSqlVersions", 1)[1])
scripts = sorted(re.sub(r"^dfend--|\.sql$", "", f) for f in os.listdir(os.path.join(ROOT, "sql"))
                 if re.fullmatch(r"dfend--[0-9.]+\.sql", f))
check("the library serves the SQL version of every install script (%s)" % ", ".join(scripts),
      sorted(served) == scripts)
# The distribution may run ahead of dfend.control while a release is prepared.
check("version %s is not behind dfend.control's %s" % (meta.get("version"), default),
      version_tuple(meta.get("version", "0")) >= version_tuple(default))

prereqs = meta.get("prereqs", {})
check("prereqs phases are known", set(prereqs) <= PHASES)
check("prereqs relations are known",
      all(set(relations) <= RELATIONS for relations in prereqs.values()))
postgres = prereqs.get("runtime", {}).get("requires", {}).get("PostgreSQL")
check("prereqs name the oldest PostgreSQL, 15", postgres is not None
      and version_tuple(str(postgres).lstrip(">= ")) [:1] == (15,))
check("resources is an object of known keys",
      set(meta.get("resources", {})) <= {"homepage", "bugtracker", "repository"})
check("meta-spec url is PGXN's", meta.get("meta-spec", {}).get("url", "").startswith("https://pgxn.org/meta/spec"))

print("%d failed" % failed if failed else "# META.json valid")
sys.exit(1 if failed else 0)
