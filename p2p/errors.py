"""The exceptions a command ends with (a user's mistake; a run that cannot go on), and how messages name URLs.

Standard library only: the command wrapper (p2p.command) maps them to exit statuses without importing torch."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in a config, a command line or an input folder, or a store or file that is not as needed.

    The CLI prints its message as one line on stderr and exits with status 2;
    the message names the file/key/URL and what was expected.
    """


class TrainingFault(RuntimeError):
    """The run could not go on (a non-finite loss); its last good checkpoint is kept."""


def redact_url(url: str) -> str:
    """A URL without its password (`postgresql://p2p:***@host/db`), for messages and logs."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    netloc, sep, path = rest.partition("/")
    if "@" not in netloc:
        return url
    creds, host = netloc.rsplit("@", 1)
    if ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}{sep}{path}"


def scrub(text: str, url: str) -> str:
    """`text` (an error from a driver, which may quote the URL) with the URL's password replaced."""
    if "://" in url:
        netloc = url.split("://", 1)[1].partition("/")[0]
        if "@" in netloc and ":" in netloc.rsplit("@", 1)[0]:
            password = netloc.rsplit("@", 1)[0].split(":", 1)[1]
            if password:
                text = text.replace(password, "***")
    return text


def first_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, short enough for a one-line error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
