"""Release bundles: built from the real tree, signed with real Ed25519 keys, refused when forged, tampered or unsafe."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lifecycle_support import copy_release_tree

from firmware_py.update.bundle import FORMAT, REQUIRED_FILES, Limits, build_bundle, extract_bundle, verify_bundle
from firmware_py.update.errors import BundleError
from firmware_py.update.signing import TrustedKeys, generate_keypair, key_id


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_release_tree(tmp_path_factory.mktemp("tree"), "0.2.0")


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def bundle(tree: Path, key: Ed25519PrivateKey, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "good.bundle"
    build_bundle(tree, out, key, source="test")
    return out


def trusted(key: Ed25519PrivateKey) -> TrustedKeys:
    return TrustedKeys.of(key.public_key())


def members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():
            fh = tar.extractfile(m)
            out.append((m, fh.read() if fh else b""))
    return out


def write_tar(path: Path, items: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in items:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def craft(path: Path, key: Ed25519PrivateKey, files: dict[str, bytes], *, extra_entries: list[dict] | None = None, members_override=None) -> Path:
    """A bundle validly signed by ``key`` whose manifest we choose (to reach the checks behind the signature)."""
    entries = [
        {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest(), "mode": "0755" if p.endswith("bin/kaoclock") else "0644"}
        for p, d in files.items()
    ]
    entries += extra_entries or []
    doc = {"format": FORMAT, "version": "9.0.0", "created": "", "requirements": [], "requires_python": "", "key_id": key_id(key.public_key())}
    doc["files"] = entries
    raw = json.dumps(doc).encode()
    items = [(tarfile.TarInfo("MANIFEST.json"), raw), (tarfile.TarInfo("MANIFEST.sig"), base64.b64encode(key.sign(raw)))]
    items += members_override if members_override is not None else [(tarfile.TarInfo("files/" + p), d) for p, d in files.items()]
    return write_tar(path, items)


def minimal_files() -> dict[str, bytes]:
    return {p: f"# {p}\n".encode() for p in REQUIRED_FILES}


def test_a_bundle_of_the_tree_verifies_and_extracts_byte_for_byte(bundle: Path, tree: Path, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    vb = verify_bundle(bundle, trusted(key))
    m = vb.manifest
    assert m.version == "0.2.0"
    paths = {f.path for f in m.files}
    assert set(REQUIRED_FILES) <= paths
    assert not any("__pycache__" in p or p.startswith("tests/") for p in paths)
    assert {f.path: f.mode for f in m.files}["device/bin/kaoclock"] == 0o755
    assert any(r.startswith("numpy>=1.26") for r in m.requirements) and "paho-mqtt>=2.1,<3" in m.requirements
    assert vb.signer == key_id(key.public_key())
    dest = tmp_path / "slot"
    dest.mkdir()
    extract_bundle(vb, dest, trusted(key))
    for f in m.files:
        assert (dest / f.path).read_bytes() == (tree / f.path).read_bytes()
    assert (dest / "device/bin/kaoclock").stat().st_mode & 0o777 == 0o755


def test_a_bundle_signed_by_another_key_is_refused_naming_both_keys(bundle: Path, key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(BundleError, match=f"signed by release key {key_id(key.public_key())}.*trusts only {key_id(other.public_key())}"):
        verify_bundle(bundle, trusted(other))


def test_a_tampered_file_is_refused(bundle: Path, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    items = members(bundle)
    for i, (info, data) in enumerate(items):
        if info.name == "files/firmware_py/__init__.py":
            items[i] = (info, data.replace(b"0.2.0", b"6.6.6"))  # same size, different bytes
    bad = write_tar(tmp_path / "tampered.bundle", items)
    with pytest.raises(BundleError, match=r"firmware_py/__init__.py has sha256 .* tampered"):
        verify_bundle(bad, trusted(key))


def test_a_manifest_altered_after_signing_is_refused(bundle: Path, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    items = members(bundle)
    info, raw = items[0]
    items[0] = (info, raw.replace(b'"version": "0.2.0"', b'"version": "0.2.1"'))
    bad = write_tar(tmp_path / "altered.bundle", items)
    with pytest.raises(BundleError, match="signature is not valid"):
        verify_bundle(bad, trusted(key))


@pytest.mark.parametrize("keep", [lambda n: n - 4, lambda n: n - 600, lambda n: n // 2, lambda n: n // 50], ids=["trailer", "end", "half", "head"])
def test_a_truncated_bundle_is_refused(bundle: Path, key: Ed25519PrivateKey, tmp_path: Path, keep) -> None:
    data = bundle.read_bytes()
    cut = tmp_path / "cut.bundle"
    cut.write_bytes(data[: keep(len(data))])
    with pytest.raises(BundleError, match=r"truncated|corrupt"):
        verify_bundle(cut, trusted(key))


def test_an_unsigned_bundle_and_a_file_that_is_no_bundle_are_refused(bundle: Path, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    items = [it for it in members(bundle) if it[0].name != "MANIFEST.sig"]
    with pytest.raises(BundleError, match="unsigned bundle is refused"):
        verify_bundle(write_tar(tmp_path / "unsigned.bundle", items), trusted(key))
    junk = tmp_path / "photo.bundle"
    junk.write_bytes(b"\xff\xd8\xff\xe0 not a tar at all" * 100)
    with pytest.raises(BundleError, match="truncated or corrupt"):
        verify_bundle(junk, trusted(key))
    with pytest.raises(BundleError, match="does not exist"):
        verify_bundle(tmp_path / "missing.bundle", trusted(key))


def test_a_member_the_manifest_does_not_list_is_refused(bundle: Path, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    items = [*members(bundle), (tarfile.TarInfo("files/firmware_py/evil.py"), b"import os\n")]
    with pytest.raises(BundleError, match="does not list"):
        verify_bundle(write_tar(tmp_path / "extra.bundle", items), trusted(key))


@pytest.mark.parametrize(
    "path,problem",
    [
        ("../../etc/cron.d/evil", "escapes the slot"),
        ("firmware_py/../../../etc/passwd", "escapes the slot"),
        ("/etc/passwd", "absolute"),
        ("firmware_py\\..\\x", "unsafe"),
        ("tests/conftest.py", "outside the release layout"),
        ("venv/bin/python", "outside the release layout"),
        ("firmware_py/./x.py", "not normalised"),
    ],
)
def test_unsafe_paths_are_refused_even_when_signed(key: Ed25519PrivateKey, tmp_path: Path, path: str, problem: str) -> None:
    files = {**minimal_files(), path: b"payload"}
    with pytest.raises(BundleError, match=problem):
        verify_bundle(craft(tmp_path / "unsafe.bundle", key, files), trusted(key))


def test_symlinks_and_hard_links_are_refused_even_when_signed(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    files = minimal_files()
    link = tarfile.TarInfo("files/models/manifest.toml")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    items = [(tarfile.TarInfo("files/" + p), d) for p, d in files.items() if p != "models/manifest.toml"] + [(link, b"")]
    with pytest.raises(BundleError, match=r"models/manifest\.toml' is a symlink"):
        verify_bundle(craft(tmp_path / "sym.bundle", key, files, members_override=items), trusted(key))
    hard = tarfile.TarInfo("files/models/manifest.toml")
    hard.type, hard.linkname = tarfile.LNKTYPE, "files/pyproject.toml"
    items[-1] = (hard, b"")
    with pytest.raises(BundleError, match="is a hard link"):
        verify_bundle(craft(tmp_path / "hard.bundle", key, files, members_override=items), trusted(key))


def test_duplicates_bad_modes_and_missing_required_files_are_refused(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    files = minimal_files()
    dup = {"path": "pyproject.toml", "size": 1, "sha256": "0" * 64, "mode": "0644"}
    with pytest.raises(BundleError, match=r"lists pyproject\.toml twice"):
        verify_bundle(craft(tmp_path / "dup.bundle", key, files, extra_entries=[dup]), trusted(key))
    suid = {"path": "firmware_py/x.py", "size": 1, "sha256": "0" * 64, "mode": "4755"}
    with pytest.raises(BundleError, match="mode '4755'"):
        verify_bundle(craft(tmp_path / "suid.bundle", key, files, extra_entries=[suid]), trusted(key))
    del files["device/bin/kaoclock"]
    with pytest.raises(BundleError, match="lacks device/bin/kaoclock"):
        verify_bundle(craft(tmp_path / "nolauncher.bundle", key, files), trusted(key))


def test_size_limits_are_enforced_before_unpacking(bundle: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(BundleError, match="more than the limit"):
        verify_bundle(bundle, trusted(key), Limits(max_bytes=10_000))
    with pytest.raises(BundleError, match="more than the limit 3"):
        verify_bundle(bundle, trusted(key), Limits(max_files=3))


def test_extract_refuses_a_bundle_swapped_after_verification(bundle: Path, key: Ed25519PrivateKey, tree: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b.bundle"
    copy.write_bytes(bundle.read_bytes())
    vb = verify_bundle(copy, trusted(key))
    build_bundle(tree, copy, key, source="rebuilt")  # a different manifest (source) in the same file
    dest = tmp_path / "slot"
    dest.mkdir()
    with pytest.raises(BundleError, match="changed after it was verified"):
        extract_bundle(vb, dest, trusted(key))


def test_keygen_writes_a_private_key_0600_and_never_replaces_one(tmp_path: Path) -> None:
    from firmware_py.update.errors import UpdateError

    kid = generate_keypair(tmp_path / "release.key", tmp_path / "release.pub")
    assert (tmp_path / "release.key").stat().st_mode & 0o777 == 0o600
    assert kid in TrustedKeys.load(tmp_path / "release.pub").keys
    before = (tmp_path / "release.key").read_bytes()
    with pytest.raises(UpdateError, match="refusing to replace"):
        generate_keypair(tmp_path / "release.key", tmp_path / "release.pub")
    assert (tmp_path / "release.key").read_bytes() == before


def test_a_trust_file_may_hold_two_keys_for_rotation(bundle: Path, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    from firmware_py.update.signing import public_pem

    new = Ed25519PrivateKey.generate()
    pub = tmp_path / "release.pub"
    pub.write_bytes(public_pem(new.public_key()) + public_pem(key.public_key()))
    assert verify_bundle(bundle, TrustedKeys.load(pub)).signer == key_id(key.public_key())
    (tmp_path / "junk.pub").write_text("hello")
    with pytest.raises(BundleError, match="holds no Ed25519 public key"):
        TrustedKeys.load(tmp_path / "junk.pub")
