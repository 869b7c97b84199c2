#!/usr/bin/env python3
"""List the trusted files of a Gramine manifest with their hashes, in `sha256sum` format.

    scripts/trusted-files.py python-worker.manifest.sgx > trusted-files.sha256
    sha256sum --check trusted-files.sha256          # in the manifest's directory
    scripts/trusted-files.py --debian-packages python-worker.manifest.sgx [--except PREFIX]

Every entry of `sgx.trusted_files` becomes one line ``<sha256>  <path>``, the path as the
manifest names it (a relative one is relative to the directory Gramine starts in, the
manifest's own). The lines are in the manifest's order, which is what is measured.

With --debian-packages it says instead which Debian packages (name and version) the host's
files among them come from, those under PREFIX left out, and how many come from none.

Exit status 2, with one line on stderr naming the file, when the manifest cannot be read or
an entry has no hash (a manifest that gramine-manifest did not expand).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10, where Gramine itself needs tomli
    import tomli as tomllib


def trusted_files(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(sha256, path) of every trusted file; ValueError names an entry without a hash."""
    entries = manifest.get("sgx", {}).get("trusted_files", [])
    listed = []
    for entry in entries:
        uri = entry if isinstance(entry, str) else entry.get("uri", "")
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not uri.startswith("file:") or not digest:
            raise ValueError(f"trusted file {uri!r} has no sha256: render the manifest with gramine-manifest")
        listed.append((digest, uri[len("file:"):]))
    return listed


# On a merged /usr, /lib is /usr/lib, but each package records the path it was built with.
_MERGED = ("/bin/", "/sbin/", "/lib/", "/lib64/")


def _aliases(path: str) -> list[str]:
    found = []
    for name in (path, os.path.realpath(path)):
        found.append(name)
        for top in _MERGED:
            if name.startswith(top):
                found.append("/usr" + name)
            elif name.startswith("/usr" + top):
                found.append(name[len("/usr"):])
    return found


def debian_owners(paths: list[str]) -> dict[str, str]:
    """The Debian package (name) that installed each of `paths`, for those that one did."""
    aliases = {path: _aliases(path) for path in paths}
    candidates = sorted({alias for names in aliases.values() for alias in names})
    owner_of: dict[str, str] = {}
    for start in range(0, len(candidates), 500):
        done = subprocess.run(["dpkg-query", "-S", *candidates[start:start + 500]], capture_output=True, text=True)
        for line in done.stdout.splitlines():
            packages, _, name = line.partition(": ")
            if name and not line.startswith("diversion "):
                owner_of[name] = packages.split(",")[0].split(":")[0].strip()
    return {path: next(owner_of[a] for a in names if a in owner_of)
            for path, names in aliases.items() if any(a in owner_of for a in names)}


def describe_packages(paths: list[str]) -> str:
    owners = debian_owners(paths)
    names = sorted(set(owners.values()))
    versions = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Version}\\n", *names], capture_output=True,
                              text=True).stdout.split("\n") if names else []
    return (f"{len(paths)}, from the Debian packages {', '.join(v for v in versions if v)}; "
            f"{len(paths) - len(owners)} of them from no package (written at install time, e.g. the "
            "standard library's .pyc files)")


def main(argv: list[str]) -> int:
    packages = argv[:1] == ["--debian-packages"]
    args = argv[1:] if packages else argv
    excluded = args[2] if len(args) == 3 and args[1] == "--except" else None
    if len(args) != (3 if excluded else 1):
        print("usage: trusted-files.py [--debian-packages] MANIFEST [--except PREFIX]", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        listed = trusted_files(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError) as exc:
        print(f"trusted-files: {path}: {exc}", file=sys.stderr)
        return 2
    if packages:
        host = [name for _, name in listed if name.startswith("/") and not (excluded and name.startswith(excluded))]
        print(describe_packages(host))
        return 0
    sys.stdout.writelines(f"{digest}  {name}\n" for digest, name in listed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
