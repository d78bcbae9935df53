"""Secrets out of everything the project writes or logs: the password of any URL and the value of any key that
looks like a secret (password, token, api_key, secret, ...).

The one redaction helper of the project: status.json, sweep_summary.*, the report, the W&B config, the run's
Hydra files, progress lines and log records all pass through it. Hand-written: no library of the stack redacts
free text (SQLAlchemy's ``URL.render_as_string(hide_password=True)`` only takes one parsed URL).

- ``redact_text("postgresql://alice:pw@host/db api_key=abc")`` -> ``"postgresql://alice:***@host/db api_key='***'"``
- ``redact({"db": {"password": "pw"}})`` -> ``{"db": {"password": "***"}}`` (``drop=True``: the key is left out)
- ``install_log_redaction()``: every log record of the process is redacted when it is created.
- ``redact_file(path)``: a text file rewritten redacted (Hydra's .hydra/*.yaml, multirun.yaml).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from neuromf.io_atomic import write_text_atomic

MASK = "***"
# ('tokens' stays out: a count such as max_tokens is no secret)
_SECRET_WORD = r"(?:(?:(?:api|access|secret|private)[_\-]?key|password|passwd|secret|credential)s?|token)"
# a key whose last part ('.', '_' or '-' separated) is a secret word: password, db.password, WANDB_API_KEY, hf-token
SECRET_KEY = re.compile(rf"(?:^|[_.\-]){_SECRET_WORD}$", re.IGNORECASE)
# scheme://user:password@host: the password, up to the last '@' before the path; also as Hydra escapes it in
# the overrides it records (postgresql\://user\:password@host)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*\\?://[^\s:/@'\"\\]*\\?:)(?P<pw>[^\s/'\"?#]+)@")
# a URL query parameter holding a secret (?password=...&): the value
_QUERY = re.compile(rf"(?P<key>[?&]{_SECRET_WORD}=)(?P<value>[^&\s'\"#]+)", re.IGNORECASE)
_KEY = rf"(?P<key>(?:[\w.\-]*[_.\-])?{_SECRET_WORD})"
_VALUE = r"(?P<value>\$\{[^}]*\}|'[^']*'|\"[^\"]*\"|[^\s,;&'\"}\])]+)"
# key=value, key: value, "key": "value", 'key': 'value' (a whole key, not the end of a longer word): the value
_KEY_VALUE = re.compile(rf"(?<![\w.\-]){_KEY}(?P<sep>[\"']?\s*[=:]\s*){_VALUE}", re.IGNORECASE)
# a command-line flag and its value: --password VALUE
_FLAG_VALUE = re.compile(rf"(?<![\w.\-])--{_KEY}(?P<sep>\s+){_VALUE}", re.IGNORECASE)


def is_secret_key(key: Any) -> bool:
    """True for keys such as 'password', 'db.password', 'api_key', 'WANDB_API_KEY', 'hf_token'."""
    return bool(SECRET_KEY.search(str(key)))


def _mask_value(m: re.Match) -> str:
    value = m.group("value")
    if value.startswith("${") or value.strip("'\"") in (MASK, "", "null", "None", "~"):
        return m.group(0)  # an interpolation names where the secret is, not the secret; none; already masked
    quote = value[0] if len(value) > 1 and value[0] in "'\"" and value[-1] == value[0] else "'"
    return f"{m.group(0)[: m.start('value') - m.start()]}{quote}{MASK}{quote}"


def redact_text(text: str) -> str:
    """`text` with URL passwords, secret query parameters and the values of secret-looking keys masked."""
    if not isinstance(text, str) or not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m.group('key')}{MASK}", text)
    text = _FLAG_VALUE.sub(_mask_value, text)
    return _KEY_VALUE.sub(_mask_value, text)


def redact(obj: Any, drop: bool = False) -> Any:
    """A copy of `obj` (dicts, lists, tuples, strings at any depth) with the values of secret-looking keys masked
    (or, with `drop`, left out) and every string passed through `redact_text`."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if is_secret_key(key):
                if not drop:
                    out[key] = MASK if value not in (None, "") else value
            else:
                out[key] = redact(value, drop)
        return out
    if isinstance(obj, list):
        return [redact(v, drop) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact(v, drop) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def redact_file(path: str | os.PathLike) -> bool:
    """Rewrite a text file (YAML, JSON, log) with `redact_text` applied, atomically; True when it changed.
    A missing or unreadable file is left alone (False)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    clean = redact_text(text)
    if clean == text:
        return False
    write_text_atomic(path, clean)
    return True


@contextlib.contextmanager
def redacted_argv():
    """`sys.argv` redacted while the block runs (for libraries that record the command line, such as W&B)."""
    saved = list(sys.argv)
    sys.argv[:] = [redact_text(a) for a in saved]
    try:
        yield
    finally:
        sys.argv[:] = saved


_previous_factory = None


def install_log_redaction() -> None:
    """Redact every log record of this process when it is created (message and traceback): one record factory
    for all loggers, so it survives Hydra reconfiguring the handlers for each job. Idempotent."""
    global _previous_factory
    if _previous_factory is not None:
        return
    _previous_factory = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = _previous_factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging itself reports it later
            return record
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(formatter.formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
