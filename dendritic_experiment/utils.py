"""What every script here shares and nothing experiment-specific: the one-line error, comma lists, locks, and files
written whole (JSON, CSV, torch) so that a kill never leaves half a file behind."""
import csv
import fcntl
import io
import json
import os
import secrets
import sys

import torch

TEMPORARY_PREFIX = ".tmp-"  # a file write_atomic has not yet renamed into place


class ExperimentError(Exception):
    """A problem the user can fix: printed as one line, exit status 2, no traceback."""


def run_cli(main, argv=None, interrupted=""):
    """main(argv) with a user's problems as one line and exit status 2 instead of a traceback."""
    try:
        main(argv)
    except ExperimentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if interrupted:
            print(interrupted, file=sys.stderr)
        return 130
    return 0


def split_list(text):
    """'a, b,,c' -> ['a', 'b', 'c']: the comma lists of config.py."""
    return [item.strip() for item in text.split(",") if item.strip()]


def try_lock(path):
    """An exclusive lock on the file at path, which then holds this process's pid; or None while another process
    holds it. The OS drops a lock when its process ends, even when killed, so a stale lock never blocks."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def check_writable(folder, flag):
    """Create folder if needed and refuse, naming the flag, when a file cannot be written there."""
    probe = os.path.join(folder, TEMPORARY_PREFIX + "probe")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise ExperimentError(f"{flag} {folder!r} cannot be written ({error.strerror}); choose a writable "
                              "folder") from None


def write_atomic(path, data):
    """Write bytes or text to path so that readers see the old file or the new one, never half. The
    temporary file gets open()'s mode, 0666 less the umask: tempfile.mkstemp's 0600 would survive the
    rename and hide results from a group or a web server."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, TEMPORARY_PREFIX + secrets.token_hex(8))
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def new_file_mode():
    """The mode open() gives a new file: 0666 less the process's umask (read by setting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def remove_temporary_files(folder):
    """Half-written files a killed process left in folder (see write_atomic)."""
    for name in os.listdir(folder):
        if name.startswith(TEMPORARY_PREFIX):
            os.remove(os.path.join(folder, name))


def write_json(path, value):
    write_atomic(path, json.dumps(value, indent=2) + "\n")


def read_json(path):
    """The JSON at path, or None when it is missing or unreadable (a crash can leave neither)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save_torch(path, value):
    buffer = io.BytesIO()
    torch.save(value, buffer)
    write_atomic(path, buffer.getvalue())


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def write_csv(path, rows):
    """rows (dicts with the same keys) as CSV, columns in the first row's order."""
    columns = list(rows[0]) if rows else []
    lines = [",".join(columns)] + [",".join(str(row[c]) for c in columns) for row in rows]
    write_atomic(path, "\n".join(lines) + "\n")
