"""The part of util-linux's Python binding (pylibmount) that crun's test_mounts.py uses.

Debian 12 does not package pylibmount, so crun-suite puts this module on PYTHONPATH:
Table(mountinfo_file).find_target(path) -> the last mount on path, with .vfs_options
(per-mount options) and .fs_options (superblock options), as proc(5) describes
/proc/PID/mountinfo.
"""
import re


def _unescape(field):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


class Fs:
    def __init__(self, line):
        before, after = line.split(" - ", 1)
        fields = before.split()
        self.target = _unescape(fields[4])
        self.vfs_options = fields[5]
        rest = after.split()
        self.fstype = rest[0]
        self.source = _unescape(rest[1]) if len(rest) > 1 else ""
        self.fs_options = rest[2] if len(rest) > 2 else ""


class Table:
    def __init__(self, path):
        with open(path) as f:
            self._mounts = [Fs(line.rstrip("\n")) for line in f if " - " in line]

    def find_target(self, path):
        for fs in reversed(self._mounts):
            if fs.target == path:
                return fs
        return None
