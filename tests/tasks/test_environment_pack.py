"""An environment packed for apply mode: what goes in, deterministic, repacked on change."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from podium.errors import NotFound, ValidationError
from podium.puppet import pack as pack_module
from podium.puppet.pack import PACK_PATH, Packer, build, members
from podium.tasks.codedir import CodeDir


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def code(tmp_path: Path) -> CodeDir:
    root = tmp_path / "code"
    write(
        root,
        {
            "environments/production/manifests/site.pp": "node default { include web }\n",
            "environments/production/data/common.yaml": "web::port: 80\n",
            "environments/production/hiera.yaml": "version: 5\n",
            "environments/production/environment.conf": "modulepath = site:$basemodulepath\n",
            "environments/production/site/web/manifests/init.pp": "class web {}\n",
            "environments/production/site/web/files/index.html": "<h1>shop</h1>\n",
            "environments/production/site/web/.git/HEAD": "ref: refs/heads/main\n",
            "environments/production/applications/shop.yaml": "components: {}\n",
            "modules/web/manifests/init.pp": "class web { fail('the shadowed copy') }\n",
            "modules/ntp/manifests/init.pp": "class ntp {}\n",
            "modules/ntp/tasks/sync.sh": "#!/bin/sh\n",
        },
    )
    (root / "modules/ntp/tasks/sync.sh").chmod(0o755)
    return CodeDir(root, builtin=None)


def unpacked(data: bytes) -> dict[str, tuple[bytes | None, int]]:
    """Member name → (content, mode); folders have no content."""
    out: dict[str, tuple[bytes | None, int]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for info in tar.getmembers():
            content = tar.extractfile(info).read() if info.isfile() else None  # type: ignore[union-attr]
            out[info.name] = (content, info.mode)
            assert (info.uid, info.gid, info.mtime) == (0, 0, 0)
    return out


def test_the_pack_holds_manifests_data_and_the_modules_puppet_would_find(code: CodeDir) -> None:
    found = unpacked(build("production", members(code, "production")))
    files = {name: content for name, (content, _) in found.items() if content is not None}
    assert files == {
        "production/environment.conf": (
            b"# Written by Podium: the modules are packed beside the manifests.\n"
            b"modulepath = modules\nmanifest = manifests\n"
        ),
        "production/manifests/site.pp": b"node default { include web }\n",
        "production/data/common.yaml": b"web::port: 80\n",
        "production/hiera.yaml": b"version: 5\n",
        # the environment's own web module wins over the one on the base modulepath
        "production/modules/web/manifests/init.pp": b"class web {}\n",
        "production/modules/web/files/index.html": b"<h1>shop</h1>\n",
        "production/modules/ntp/manifests/init.pp": b"class ntp {}\n",
        "production/modules/ntp/tasks/sync.sh": b"#!/bin/sh\n",
    }
    assert found["production/modules/ntp/tasks/sync.sh"][1] == 0o755
    assert found["production/manifests/site.pp"][1] == 0o644
    assert found["production/modules"] == (None, 0o755)


def test_the_same_files_give_the_same_bytes(code: CodeDir, tmp_path: Path) -> None:
    first = build("production", members(code, "production"))
    os.utime(code.root / "modules/ntp/manifests/init.pp", (1, 1))  # times are not packed
    assert build("production", members(code, "production")) == first


def test_a_link_leaving_its_module_is_left_out(code: CodeDir, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for nodes\n")
    files = code.root / "modules/ntp/files"
    files.mkdir()
    (files / "leak").symlink_to(secret)
    (files / "real.conf").write_text("server pool.ntp.org\n")
    (files / "alias.conf").symlink_to(files / "real.conf")
    names = {arc for arc, _, _ in members(code, "production")}
    assert "production/modules/ntp/files/leak" not in names
    assert {
        "production/modules/ntp/files/real.conf",
        "production/modules/ntp/files/alias.conf",
    } <= names


def test_an_unknown_environment_is_not_found(code: CodeDir) -> None:
    with pytest.raises(NotFound, match="unknown environment 'staging'"):
        members(code, "staging")


def test_an_environment_too_large_is_refused_naming_it(
    code: CodeDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pack_module, "MAX_PACK_BYTES", 40)
    with pytest.raises(ValidationError, match="environment production holds more than"):
        build("production", members(code, "production"))


def test_the_packer_packs_again_only_when_a_file_changed(code: CodeDir, tmp_path: Path) -> None:
    packer = Packer(code, tmp_path / "packs")
    first = packer.pack("production")
    assert hashlib.sha256(first.path.read_bytes()).hexdigest() == first.sha256
    assert first.path.stat().st_size == first.size_bytes
    assert packer.pack("production") == first
    assert packer.path(first.sha256) == first.path
    assert first.spec() == {
        "filename": "production.tar.gz",
        "uri": {"path": f"{PACK_PATH}/{first.sha256}", "params": {}},
        "sha256": first.sha256,
        "size_bytes": first.size_bytes,
    }
    site = code.root / "environments/production/manifests/site.pp"
    site.write_text("node default { include ntp }\n")
    second = packer.pack("production")
    assert second.sha256 != first.sha256
    assert b"include ntp" in unpacked(second.path.read_bytes())["production/manifests/site.pp"][0]  # type: ignore[operator]


def test_old_packs_are_removed_past_the_kept_number(
    code: CodeDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pack_module, "KEPT", 2)
    packer = Packer(code, tmp_path / "packs")
    site = code.root / "environments/production/manifests/site.pp"
    made = []
    for n in range(3):
        site.write_text(f"notice({n})\n")
        made.append(packer.pack("production"))
    assert packer.path(made[0].sha256) is None
    assert [packer.path(p.sha256) for p in made[1:]] == [p.path for p in made[1:]]


@pytest.mark.parametrize("name", ["", "../etc", "A" * 64, "0" * 63, "g" * 64])
def test_a_pack_name_that_is_no_sha256_names_no_file(
    code: CodeDir, tmp_path: Path, name: str
) -> None:
    assert Packer(code, tmp_path / "packs").path(name) is None


def test_an_environment_without_manifests_still_has_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "code"
    write(root, {"environments/production/modules/ntp/manifests/init.pp": "class ntp {}\n"})
    found = unpacked(build("production", members(CodeDir(root, builtin=None), "production")))
    assert found["production/manifests"] == (None, 0o755)
