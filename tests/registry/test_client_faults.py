"""Fault injection with httpx.MockTransport: registry answers a real server will not give on cue.

Only for faults (a corrupted blob, a lying manifest, error bodies); every behaviour of a healthy
registry is tested against a real one (test_client_distribution.py, test_client_hub.py).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from kit.registry import make_image
from ukedge.errors import AuthenticationError, DigestMismatchError, NotFoundError, RegistryError
from ukedge.image import ImageStore, mediatypes
from ukedge.registry import Credentials, RegistryClient, pull

HOST = "registry.test:5000"


def _serve(
    store: ImageStore, ref: str, tamper: Callable[[str, bytes], bytes]
) -> httpx.MockTransport:
    """A registry that serves ``ref`` of ``store``, passing each body through ``tamper``."""
    image, _ = store.manifest(ref)

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if "/manifests/" in path:
            data = tamper("manifest", store.read_blob(image.digest))
            return httpx.Response(
                200,
                content=data,
                headers={
                    "Content-Type": mediatypes.OCI_MANIFEST,
                    "Docker-Content-Digest": image.digest,
                },
            )
        if "/blobs/" in path:
            digest = path.rsplit("/", 1)[1]
            return httpx.Response(200, content=tamper(digest, store.read_blob(digest)))
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def _client(transport: httpx.MockTransport, tmp_path: Path) -> RegistryClient:
    return RegistryClient(
        HOST, insecure=True, transport=transport, state_dir=tmp_path / "state", retries=0
    )


def test_corrupted_blob_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    src, dst = ImageStore(tmp_path / "src"), ImageStore(tmp_path / "dst")
    make_image(src, "app:1", kernel=b"k" * 100_000)
    kernel = src.manifest("app:1")[1].layers[0].digest

    def flip_one_byte(what: str, data: bytes) -> bytes:
        return data[:500] + bytes([data[500] ^ 1]) + data[501:] if what == kernel else data

    with (
        _client(_serve(src, "app:1", flip_one_byte), tmp_path) as client,
        pytest.raises(DigestMismatchError) as info,
    ):
        pull(dst, f"{HOST}/app:1", client=client)
    assert info.value.expected == kernel
    assert not dst.has_blob(kernel)
    assert dst.images() == []
    assert not any(p.name.startswith(".upload-") for p in dst.blobs_dir.iterdir())


def test_manifest_that_does_not_hash_to_its_digest_is_refused(tmp_path: Path) -> None:
    src, dst = ImageStore(tmp_path / "src"), ImageStore(tmp_path / "dst")
    digest = make_image(src, "app:1")

    def reformat(what: str, data: bytes) -> bytes:
        return json.dumps(json.loads(data), indent=1).encode() if what == "manifest" else data

    with _client(_serve(src, "app:1", reformat), tmp_path) as client:
        with pytest.raises(DigestMismatchError, match="manifest"):
            pull(dst, f"{HOST}/app:1", client=client)
        with pytest.raises(DigestMismatchError, match="manifest"):
            pull(dst, f"{HOST}/app@{digest}", client=client)
    assert dst.images() == []


def test_blob_longer_than_declared_is_cut_off(tmp_path: Path) -> None:
    src, dst = ImageStore(tmp_path / "src"), ImageStore(tmp_path / "dst")
    make_image(src, "app:1")
    kernel = src.manifest("app:1")[1].layers[0].digest

    def pad(what: str, data: bytes) -> bytes:
        return data + b"\0" * 10_000_000 if what == kernel else data

    with (
        _client(_serve(src, "app:1", pad), tmp_path) as client,
        pytest.raises(RegistryError, match="more than the 4096 bytes"),
    ):
        pull(dst, f"{HOST}/app:1", client=client)
    assert not dst.has_blob(kernel)


def _error(status: int, code: str, message: str) -> httpx.MockTransport:
    body = {"errors": [{"code": code, "message": message, "detail": None}]}
    return httpx.MockTransport(lambda request: httpx.Response(status, json=body))


@pytest.mark.parametrize(
    ("status", "code", "error", "text"),
    [
        (404, "NAME_UNKNOWN", NotFoundError, "not found on registry.test:5000 (NAME_UNKNOWN"),
        (403, "DENIED", AuthenticationError, "`ukedge login registry.test:5000`"),
        (401, "UNAUTHORIZED", AuthenticationError, "run `ukedge login registry.test:5000`"),
        (429, "TOOMANYREQUESTS", RegistryError, "try again later"),
        (500, "UNKNOWN", RegistryError, "answered UNKNOWN: boom"),
    ],
)
def test_registry_errors_map_to_ukedge_errors(
    tmp_path: Path, status: int, code: str, error: type[RegistryError], text: str
) -> None:
    with _client(_error(status, code, "boom"), tmp_path) as client, pytest.raises(error) as info:
        client.tags("team/app")
    assert text in str(info.value)
    assert info.value.code == code
    assert info.value.status == status


def test_unreachable_registry_names_itself(tmp_path: Path) -> None:
    with (
        RegistryClient("127.0.0.1:1", state_dir=tmp_path) as client,
        pytest.raises(RegistryError, match=r"cannot reach 127.0.0.1:1 at http://127.0.0.1:1"),
    ):
        client.ping()


def test_refused_connection_fails_at_once_without_retry_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listening is not transient (issue 16.5: twelve warnings over 4 s before)."""
    with (
        RegistryClient("127.0.0.1:1", state_dir=tmp_path, retries=5) as client,
        pytest.raises(RegistryError, match=r"Connection refused\); is it running"),
    ):
        client.ping()
    assert [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()] == []


def test_token_flow_sends_credentials_to_the_realm_and_retries(tmp_path: Path) -> None:
    """The exact wire exchange of the token flow (the hub tests run the same flow for real)."""
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("Authorization")))
        if request.url.path == "/token":
            scopes = request.url.params.get_list("scope")
            token = hashlib.sha256(" ".join(scopes).encode()).hexdigest()
            return httpx.Response(200, json={"token": token, "expires_in": 300})
        if request.headers.get("Authorization", "").startswith("Bearer "):
            return httpx.Response(200, json={"name": "team/app", "tags": ["1"]})
        challenge = (
            'Bearer realm="http://auth.test/token",service="svc",scope="repository:team/app:pull"'
        )
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    with RegistryClient(
        HOST,
        insecure=True,
        transport=httpx.MockTransport(handler),
        credentials=Credentials("bob", "pw"),
        state_dir=tmp_path,
    ) as client:
        assert client.tags("team/app") == ["1"]
        assert client.tags("team/app") == ["1"]
    urls = [url for url, _ in seen]
    assert urls[0] == f"http://{HOST}/v2/team/app/tags/list"
    assert urls[1] == "http://auth.test/token?service=svc&scope=repository%3Ateam%2Fapp%3Apull"
    assert seen[1][1] == "Basic Ym9iOnB3"
    assert seen[2][1] is not None and seen[2][1].startswith("Bearer ")
    assert len(seen) == 4  # the second listing reused the cached token


class _Drops(httpx.SyncByteStream):
    """A body that breaks off after ``keep`` bytes, as a dropped connection does."""

    def __init__(self, data: bytes, keep: int) -> None:
        self.data, self.keep = data, keep

    def __iter__(self) -> Iterator[bytes]:
        yield self.data[: self.keep]
        raise httpx.ReadError("connection reset (injected)")


def test_dropped_download_continues_with_range(tmp_path: Path) -> None:
    src, dst = ImageStore(tmp_path / "src"), ImageStore(tmp_path / "dst")
    digest = make_image(src, "app:1", kernel=bytes(range(256)) * 4000)
    kernel = src.manifest("app:1")[1].layers[0].digest
    ranges: list[str | None] = []
    serve = _serve(src, "app:1", lambda what, data: data)

    def handler(request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith(kernel):
            return serve.handle_request(request)
        data = src.read_blob(kernel)
        ranges.append(request.headers.get("Range"))
        if len(ranges) == 1:
            return httpx.Response(200, stream=_Drops(data, 300_000))
        start = int(request.headers["Range"].removeprefix("bytes=").rstrip("-"))
        return httpx.Response(
            206,
            content=data[start:],
            headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
        )

    transport = httpx.MockTransport(handler)
    with RegistryClient(
        HOST, insecure=True, transport=transport, state_dir=tmp_path / "st", retry_delay=0
    ) as client:
        assert pull(dst, f"{HOST}/app:1", client=client).digest == digest
    assert ranges == [None, "bytes=300000-"]
    assert dst.read_blob(kernel) == src.read_blob(kernel)


def test_registry_ignoring_range_is_handled(tmp_path: Path) -> None:
    src, dst = ImageStore(tmp_path / "src"), ImageStore(tmp_path / "dst")
    digest = make_image(src, "app:1", kernel=bytes(range(256)) * 4000)
    kernel = src.manifest("app:1")[1].layers[0].digest
    serve = _serve(src, "app:1", lambda what, data: data)
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        if not request.url.path.endswith(kernel):
            return serve.handle_request(request)
        calls += 1
        data = src.read_blob(kernel)
        return httpx.Response(
            200,
            stream=_Drops(data, 100_000) if calls == 1 else None,
            content=None if calls == 1 else data,
        )

    with RegistryClient(
        HOST,
        insecure=True,
        transport=httpx.MockTransport(handler),
        state_dir=tmp_path / "st",
        retry_delay=0,
    ) as client:
        assert pull(dst, f"{HOST}/app:1", client=client).digest == digest
    assert calls == 2


def test_credentials_never_go_to_another_host(tmp_path: Path) -> None:
    """An upload URL on another host (a storage redirect) gets no Authorization header."""
    auth_by_host: dict[str, set[str | None]] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.netloc.decode()
        auth_by_host.setdefault(host, set()).add(request.headers.get("Authorization"))
        if host == HOST and "Authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="test"'})
        if host == HOST and request.method == "POST":
            return httpx.Response(202, headers={"Location": "http://storage.test/upload/1"})
        if host == "storage.test" and request.method == "PUT":
            return httpx.Response(201)
        return httpx.Response(404)

    with RegistryClient(
        HOST,
        insecure=True,
        transport=httpx.MockTransport(handler),
        credentials=Credentials("bob", "pw"),
        state_dir=tmp_path,
        retries=0,
    ) as client:
        data = b"x" * 10
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        client.upload_blob("team/app", digest, len(data), lambda: io.BytesIO(data))
    assert auth_by_host[HOST] == {None, "Basic Ym9iOnB3"}
    assert auth_by_host["storage.test"] == {None}
