"""Hostile input for `mt-data`: malformed or malicious manifests, registries and archives.

Every case must end in a one-line error, a non-zero exit and nothing touched outside the destination:
a `victim/` folder beside the destination (and beside $NLLB_MINI_HOME) must survive each one.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from hostile import assert_refused, snapshot

GOOD = {
    "id": '"evil"',
    "kind": '"parallel"',
    "languages": '["eng_Latn", "deu_Latn"]',
}
SOURCE = {"url": '"http://127.0.0.1:9/evil.tar"', "archive_format": '"tar"'}
LAYOUT = {"files": '["{lang}.txt"]'}


def manifest_text(top: dict | None = None, source: dict | bool | None = None, layout: dict | bool | None = None) -> str:
    """A manifest from the good one with keys replaced (a value of None drops the key, False drops the table)."""
    parts = []
    for table, base, over in ((None, GOOD, top), ("source", SOURCE, source), ("layout", LAYOUT, layout)):
        if over is False:
            continue
        items = {**base, **(over or {})}
        if table:
            parts.append(f"[{table}]")
        parts += [f"{k} = {v}" for k, v in items.items() if v is not None]
    return "\n".join(parts) + "\n"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """$NLLB_MINI_HOME with a victim folder beside the destination, and one beside the home itself."""
    home, mdir = tmp_path / "home", tmp_path / "manifests"
    mdir.mkdir()
    for victim in (home / "data" / "victim", tmp_path / "victim"):
        victim.mkdir(parents=True)
        (victim / "precious.txt").write_text("keep me\n")
    monkeypatch.setenv("NLLB_MINI_HOME", str(home))
    monkeypatch.setenv("NLLB_MINI_MANIFESTS", str(mdir))
    monkeypatch.setenv("HOME", str(tmp_path))
    return home


def _victims_intact(tmp_path: Path) -> None:
    for victim in (tmp_path / "home" / "data" / "victim", tmp_path / "victim"):
        assert (victim / "precious.txt").read_text() == "keep me\n"
        assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]


# ---------------------------------------------------------------- malformed manifests: refused before any I/O
MANIFEST_CASES = {
    "sha256-int": (dict(source={"sha256": "12345"}), "sha256 = 12345"),
    "size-str": (dict(source={"size": '"big"'}), 'size = "big"'),
    "size-negative": (dict(source={"size": "-1"}), "size = -1"),
    "size-bool": (dict(source={"size": "true"}), "size = true"),
    "languages-ints": (dict(top={"languages": "[1, 2]"}), "languages = [1, 2]"),
    "languages-table": (dict(top={"languages": "{a = 1}"}), "languages"),
    "id-int": (dict(top={"id": "7"}), "id = 7"),
    "id-traversal": (dict(top={"id": '"../../victim"'}), 'id = "../../victim"'),
    "id-absolute": (dict(top={"id": '"/tmp/x"'}), "plain name"),
    "kind-int": (dict(top={"kind": "3"}), "kind = 3"),
    "description-list": (dict(top={"description": "[1]"}), "description"),
    "source-string": (dict(top={"source": '"oops"'}, source=False), "must be a table"),
    "source-unknown-key": (dict(source={"sha": '"x"'}), "unknown keys ['sha']"),
    "filename-traversal": (dict(source={"filename": '"../../victim/precious.txt"'}), "plain file name"),
    "filename-absolute": (dict(source={"filename": '"/tmp/evil.tar"'}), "plain file name"),
    "filename-dotdot": (dict(source={"filename": '".."'}), "plain file name"),
    "url-dotdot-name": (dict(source={"url": '"http://127.0.0.1:9/a/.."'}), "filename"),
    "url-not-http": (dict(source={"url": '"file:///etc/passwd"'}), "http"),
    "url-int": (dict(source={"url": "5"}), "url = 5"),
    "archive-format": (dict(source={"archive_format": '"rar"'}), "archive_format"),
    "columns-str": (dict(layout={"columns": '"two"'}), 'columns = "two"'),
    "columns-one": (dict(layout={"columns": "1"}), "columns = 1"),
    "layout-string": (dict(top={"layout": '"flat"'}, layout=False), "must be a table"),
    "layout-root-traversal": (dict(layout={"root": '"../../victim"'}), "root"),
    "layout-files-absolute": (dict(layout={"files": '["/etc/{lang}"]'}), "files"),
    "layout-files-str": (dict(layout={"files": '"{lang}.txt"'}), "files"),
    "line-aligned-str": (dict(layout={"line_aligned": '"yes"'}), "line_aligned"),
    "format-unknown": (dict(layout={"format": '"csv"'}), "format"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_malformed_manifest_is_one_line_error(home, tmp_path, case):
    spec, expect = MANIFEST_CASES[case]
    path = tmp_path / "manifests" / "evil.toml"
    path.write_text(manifest_text(**spec))
    for args in (["fetch", path, "--no-progress"], ["verify", path], ["register", path, tmp_path / "victim"]):
        msg = assert_refused("mt-data", args, tmp_path, expect=expect)
        assert str(path) in msg
    _victims_intact(tmp_path)


def test_manifest_errors_give_the_line(home, tmp_path):
    path = tmp_path / "manifests" / "evil.toml"
    path.write_text(manifest_text(source={"sha256": "12345"}))
    msg = assert_refused("mt-data", ["fetch", path], tmp_path)
    assert msg.startswith(f"error: {path}:7: [source] sha256 = 12345: must be 64 lowercase hex digits")


@pytest.mark.parametrize(
    "raw, expect",
    [
        (b'id = "evil"\ndescription = "caf\xe9"\n', ":2: manifest is not UTF-8"),
        (b'id = "evil\n', "not valid TOML"),
        (b"\xff\xfei\x00d\x00", "not UTF-8"),  # UTF-16
    ],
)
def test_manifest_bad_encoding_or_syntax(home, tmp_path, raw, expect):
    path = tmp_path / "manifests" / "evil.toml"
    path.write_bytes(raw)
    assert_refused("mt-data", ["fetch", "evil"], tmp_path, expect=expect)
    assert_refused("mt-data", ["verify", path], tmp_path, expect=str(path))


def test_bom_is_accepted(home, tmp_path):
    """A byte-order mark (Notepad's UTF-8) is still UTF-8: not a reason to refuse."""
    from hostile import run_cli

    (tmp_path / "manifests" / "evil.toml").write_bytes(b"\xef\xbb\xbf" + manifest_text().encode())
    rc, out, err = run_cli("mt-data", ["list"])
    assert rc == 0 and "evil" in out and "warning" not in err


def test_corpus_id_argument_cannot_traverse(home, tmp_path):
    (tmp_path / "victim" / "x.toml").write_text(manifest_text())
    assert_refused("mt-data", ["fetch", "../../victim/x"], tmp_path, expect="not a corpus id")


# ---------------------------------------------------------------- registry
@pytest.mark.parametrize(
    "raw, expect",
    [
        (b'[corpora.evil]\npath = "caf\xe9"\n', "not UTF-8"),
        (b"[corpora.evil\n", "not valid TOML"),
        (b'[corpora.evil]\ndata = "/tmp"\n', "has no `path`"),
        (b"[corpora.evil]\npath = 5\n", "path = 5"),
        (b"corpora = 5\n", "corpora"),
        (b'[corpora]\nevil = "x"\n', "evil"),
    ],
)
@pytest.mark.parametrize("cmd", ["list", "verify", "register"])
def test_broken_registry_is_one_line_error(home, tmp_path, raw, expect, cmd):
    (tmp_path / "manifests" / "evil.toml").write_text(manifest_text(source={"archive_format": None}))
    registry = home / "registry.toml"
    registry.write_bytes(raw)
    args = {"list": ["list"], "verify": ["verify", "evil"], "register": ["register", "evil", registry]}[cmd]
    msg = assert_refused("mt-data", args, tmp_path, expect=expect)
    assert str(registry) in msg
    _victims_intact(tmp_path)


# ---------------------------------------------------------------- archives that reach outside
def _tar(members: list[tuple[str, str, str]]) -> bytes:
    """(kind, name, data or link target) -> tar bytes; kinds: file, sym, hard, dir, fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for kind, name, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(value.encode())
                tf.addfile(info, io.BytesIO(value.encode()))
                continue
            info.type = {
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "dir": tarfile.DIRTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            info.linkname = value
            tf.addfile(info)
    return buf.getvalue()


def _zip(members: list[tuple[str, str, str]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for kind, name, value in members:
            info = zipfile.ZipInfo(name)
            if kind == "sym":
                info.external_attr = 0o120777 << 16
            zf.writestr(info, value)
    return buf.getvalue()


LAYOUT_OK = [("file", "eng_Latn.txt", "a\n"), ("file", "deu_Latn.txt", "b\n")]
ARCHIVE_CASES = {
    "tar-dotdot": ("tar", [("file", "../victim/pwned.txt", "x")], "'../victim/pwned.txt'"),
    "tar-deep-dotdot": ("tar", [("file", "a/../../../victim/pwned.txt", "x")], "outside the destination"),
    "tar-absolute": ("tar", [("file", "{abs}/pwned.txt", "x")], "absolute"),
    "tar-symlink-out": ("tar", [("sym", "evil", "../victim"), ("file", "evil/pwned.txt", "x")], "'evil'"),
    "tar-symlink-absolute": ("tar", [("sym", "evil", "{abs}")], "outside the destination"),
    "tar-symlink-chain": (
        "tar",
        [("sym", "here", "."), ("sym", "up", "here/.."), ("file", "up/victim/pwned.txt", "x")],
        "outside the destination",
    ),
    "tar-hardlink-out": ("tar", [("hard", "evil", "../victim/precious.txt")], "outside the destination"),
    "tar-fifo": ("tar", [("fifo", "pipe", "")], "special file"),
    "zip-dotdot": ("zip", [("file", "../victim/pwned.txt", "x")], "'../victim/pwned.txt'"),
    "zip-absolute": ("zip", [("file", "{abs}/pwned.txt", "x")], "absolute"),
    "zip-symlink-out": ("zip", [("sym", "evil", "../../victim")], "outside the destination"),
}


def _archive(tmp_path: Path, case: str) -> tuple[Path, str]:
    fmt, members, expect = ARCHIVE_CASES[case]
    abs_victim = str(tmp_path / "home" / "data" / "victim")
    members = [(k, n.replace("{abs}", abs_victim), v.replace("{abs}", abs_victim)) for k, n, v in members]
    data = (_tar if fmt == "tar" else _zip)(LAYOUT_OK + members)
    path = tmp_path / f"evil.{fmt}"
    path.write_bytes(data)
    (tmp_path / "manifests" / "evil.toml").write_text(
        manifest_text(source={"archive_format": f'"{fmt}"', "url": f'"http://127.0.0.1:9/evil.{fmt}"'})
    )
    return path, expect


@pytest.mark.parametrize("case", sorted(ARCHIVE_CASES))
def test_archive_reaching_outside_is_refused_and_named(home, tmp_path, case):
    archive, expect = _archive(tmp_path, case)
    dest = home / "data" / "evil"
    msg = assert_refused(
        "mt-data", ["register", "evil", archive, "--no-progress"], tmp_path, expect=expect, allow=["home/data/evil"]
    )
    assert "refused" in msg and "damaged" not in msg and str(archive) in msg
    _victims_intact(tmp_path)
    assert not [p for p in dest.iterdir() if p.name != ".lock"], "nothing may be unpacked from a refused archive"
    assert not (home / "registry.toml").exists()


def test_fetch_of_a_traversal_archive_touches_nothing_outside_dest(home, tmp_path):
    """The whole path: download from a local server, then a refused unpack; `dest` keeps only the download."""
    import http.server
    import threading

    archive, _ = _archive(tmp_path, "tar-symlink-out")
    payload = archive.read_bytes()
    archive.unlink()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/evil.tar"
        (tmp_path / "manifests" / "evil.toml").write_text(manifest_text(source={"url": f'"{url}"'}))
        dest = tmp_path / "dl"
        before = snapshot(tmp_path / "victim")
        msg = assert_refused(
            "mt-data",
            ["fetch", "evil", "--dest", dest, "--no-progress"],
            tmp_path,
            expect="points outside the destination",
            allow=["dl"],
        )
        assert "'evil'" in msg
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert snapshot(tmp_path / "victim") == before
    _victims_intact(tmp_path)
    assert sorted(p.name for p in dest.iterdir() if p.name != ".lock") == ["evil.tar"]


def test_damaged_archive_still_says_damaged(home, tmp_path):
    archive, _ = _archive(tmp_path, "tar-dotdot")
    archive.write_bytes(archive.read_bytes()[:700])
    assert_refused(
        "mt-data", ["register", "evil", archive, "--no-progress"], tmp_path, expect="damaged", allow=["home/data/evil"]
    )
    bad_zip = tmp_path / "evil.zip"
    bad_zip.write_bytes(b"PK\x03\x04 not a zip at all")
    (tmp_path / "manifests" / "evil.toml").write_text(manifest_text(source={"archive_format": '"zip"'}))
    assert_refused(
        "mt-data", ["register", "evil", bad_zip, "--no-progress"], tmp_path, expect="damaged", allow=["home/data/evil"]
    )


def test_unknown_command_is_an_error_line(home, tmp_path):
    assert_refused("mt-data", ["fecth", "flores200"], tmp_path, expect="unknown command 'fecth'")
