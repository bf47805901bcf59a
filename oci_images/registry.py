"""A small OCI distribution-API client on httpx (pull manifests/blobs, push blobs/manifests).

Why not ``oras``: oras-py 0.2 reads a whole blob into memory for a monolithic
upload (``put_upload`` does ``fd.read()``), has no cross-repository mount, retries
with sleeps inside the library, and reports every failure as ``ValueError``, so a
caller cannot tell wrong credentials from a down registry. Model layers are
gigabytes and those distinctions are this step's user-facing errors, so the few
endpoints needed are spoken here directly with httpx, streaming every body.

Auth follows the distribution token spec: a request answered ``401`` with
``WWW-Authenticate: Basic ...`` is retried with basic credentials; with
``Bearer realm=...,service=...,scope=...`` a token is fetched from the realm
(with the credentials, if any) for the scopes the request needs, cached per
scope set, and the request is retried once.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from oci_images.auth import Credentials, credentials_from_docker_config
from oci_images.errors import (
    AuthError,
    BaseImageNotFound,
    RegistryProtocolError,
    RegistryUnreachable,
)
from oci_images.reference import DOCKER_HUB, ImageRef

log = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)

ContentFactory = Callable[[], Iterator[bytes]]

_PARAM = re.compile(r'(\w+)="([^"]*)"')
_UNREACHABLE = (httpx.TransportError,)


@dataclass(frozen=True)
class Fetched:
    """A manifest as the registry sent it."""

    body: bytes  # the exact bytes (their sha256 is the digest)
    media_type: str  # Content-Type / mediaType of the body
    digest: str  # "sha256:<hex>" of body


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))


class RegistryClient:
    """Talks to one registry host.

    Args:
        registry: ``host[:port]`` as written in image references.
        insecure: use plain HTTP (for a local registry without TLS); default HTTPS with verification.
        credentials: explicit credentials; default: looked up in the Docker config.
        transport: an httpx transport (tests may pass one; default: the network).
        timeout: seconds to wait for connect/read.
    """

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.registry = registry
        api_host = "registry-1.docker.io" if registry == DOCKER_HUB else registry
        self.base_url = f"{'http' if insecure else 'https'}://{api_host}"
        self.insecure = insecure
        if credentials is not None:
            credentials.validate()
        self._credentials = credentials
        self._looked_up = credentials is not None
        self._basic = False
        self._tokens: dict[tuple[str, ...], str] = {}
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=True,
            transport=transport,
        )

    # -- plumbing ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def credentials(self) -> Credentials | None:
        if not self._looked_up:
            self._credentials = credentials_from_docker_config(self.registry)
            self._looked_up = True
        return self._credentials

    def _auth_header(self, scopes: tuple[str, ...]) -> dict[str, str]:
        creds = self.credentials
        if creds and creds.token and not self._tokens:
            return {"Authorization": f"Bearer {creds.token}"}
        if scopes in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scopes]}"}
        if self._basic and creds and creds.username:
            raw = f"{creds.username}:{creds.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    def _who(self) -> str:
        creds = self.credentials
        if creds is None:
            return "no credentials"
        return "a bearer token" if creds.token else f"user {creds.username!r}"

    def _refused(self, what: str) -> AuthError:
        if self.credentials is None:
            fix = (
                f"pass credentials=Credentials(username=..., password=...), or log in with "
                f"`docker login {self.registry}` (read from {{DOCKER_CONFIG or ~/.docker}}/config.json)"
            )
        else:
            fix = "check the username and password (or token) and that the account may push/pull this repository"
        return AuthError(f"registry {self.registry} refused {what} with {self._who()}: {fix}")

    def _fetch_token(self, params: dict[str, str], scopes: tuple[str, ...]) -> None:
        realm = params.get("realm")
        if not realm:
            raise RegistryProtocolError(f"registry {self.registry} sent a Bearer challenge without realm")
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        wanted = list(scopes) or ([params["scope"]] if params.get("scope") else [])
        query += [("scope", s) for s in wanted]
        creds = self.credentials
        auth = None
        if creds and creds.username:
            auth = httpx.BasicAuth(creds.username, creds.password or "")
        elif creds and creds.token:
            query.append(("access_token", creds.token))
        try:
            resp = self._http.get(realm, params=query, auth=auth)
        except _UNREACHABLE as exc:
            raise RegistryUnreachable(
                f"token service {realm} of registry {self.registry} did not answer ({exc}); check the network"
            ) from exc
        if resp.status_code in (401, 403):
            raise self._refused(f"a token for {', '.join(wanted) or 'access'}")
        if resp.status_code != 200:
            raise RegistryProtocolError(f"token service {realm} answered HTTP {resp.status_code}: {resp.text[:200]}")
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryProtocolError(f"token service {realm} answered without 'token' or 'access_token'")
        self._tokens[scopes] = token

    def request(
        self,
        method: str,
        url: str,
        *,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
        content: bytes | ContentFactory | None = None,
        params: dict[str, str] | None = None,
        what: str = "the request",
    ) -> httpx.Response:
        """Send one request, answering an auth challenge once.

        Args:
            method: HTTP method.
            url: absolute URL or a path below the registry's base URL.
            scopes: token scopes the request needs, e.g. ``("repository:a/b:pull,push",)``.
            headers: extra headers.
            content: body bytes, or a zero-argument callable returning a fresh byte iterator
                (called again if the request must be resent after authenticating).
            params: query parameters.
            what: words for error messages.

        Raises:
            RegistryUnreachable: no connection, or it broke mid-request.
            AuthError: still 401/403 after authenticating.
        """
        if not url.startswith(("http://", "https://")):
            url = self.base_url + url
        scopes = tuple(sorted(scopes))
        for attempt in range(2):
            body = content() if callable(content) else content
            hdrs = {**(headers or {}), **self._auth_header(scopes)}
            try:
                resp = self._http.request(method, url, headers=hdrs, content=body, params=params)
            except _UNREACHABLE as exc:
                hint = "" if self.insecure else " (a plain-HTTP registry needs insecure=True / --insecure)"
                raise RegistryUnreachable(
                    f"registry {self.registry} did not answer {what} at {url.split('?')[0]}: {exc!s}{hint}; "
                    "check the address and that the registry is running, then re-run "
                    "(blobs that already arrived are not sent again)"
                ) from exc
            if resp.status_code not in (401, 403) or attempt == 1:
                break
            scheme, params_ = _challenge(resp.headers.get("www-authenticate", ""))
            if scheme == "bearer":
                self._fetch_token(params_, scopes)
            elif scheme == "basic" and self.credentials and self.credentials.username and not self._basic:
                self._basic = True
            else:
                break
        if resp.status_code in (401, 403):
            raise self._refused(what)
        return resp

    def _location(self, resp: httpx.Response) -> str:
        loc = resp.headers.get("location")
        if not loc:
            raise RegistryProtocolError(f"registry {self.registry} started an upload without a Location header")
        return str(httpx.URL(self.base_url).join(loc))

    # -- pull -------------------------------------------------------------------------------------
    def get_manifest(self, ref: ImageRef, accept: tuple[str, ...] = MANIFEST_TYPES + INDEX_TYPES) -> Fetched:
        """Fetch a manifest or index by tag or digest.

        Raises:
            BaseImageNotFound: the registry has no such repository or tag.
        """
        resp = self.request(
            "GET",
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            scopes=(f"repository:{ref.repository}:pull",),
            headers={"Accept": ", ".join(accept)},
            what=f"the manifest of {ref}",
        )
        if resp.status_code == 404:
            raise BaseImageNotFound(
                f"image {ref} not found in registry {self.registry}: check the name and tag "
                f"(the registry answered 404: {resp.text[:160].strip()}), or push the base image first"
            )
        if resp.status_code != 200:
            raise RegistryProtocolError(f"GET manifest {ref} answered HTTP {resp.status_code}: {resp.text[:200]}")
        body = resp.content
        digest = sha256_digest(body)
        if ref.digest and ref.digest != digest:
            raise RegistryProtocolError(f"manifest of {ref} has digest {digest}, not the one asked for")
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        return Fetched(body=body, media_type=media_type, digest=digest)

    def get_blob(self, repository: str, digest: str, limit: int = 16 << 20) -> bytes:
        """Fetch a small blob (an image config) and check its digest."""
        resp = self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", scopes=(f"repository:{repository}:pull",), what=f"blob {digest}"
        )
        if resp.status_code == 404:
            raise BaseImageNotFound(f"blob {digest} of {self.registry}/{repository} is missing from the registry")
        if resp.status_code != 200 or len(resp.content) > limit:
            raise RegistryProtocolError(f"GET blob {digest} answered HTTP {resp.status_code}")
        if sha256_digest(resp.content) != digest:
            raise RegistryProtocolError(f"blob {digest} from {self.registry}/{repository} does not match its digest")
        return resp.content

    def blob_stream(self, repository: str, digest: str, chunk: int = 1 << 20) -> ContentFactory:
        """A content factory that streams a blob from this registry (for copying or saving it)."""

        def gen() -> Iterator[bytes]:
            url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
            scopes = (f"repository:{repository}:pull",)
            self.request("HEAD", url, scopes=scopes, what=f"blob {digest}")  # authenticate first
            try:
                with self._http.stream("GET", url, headers=self._auth_header(scopes)) as resp:
                    if resp.status_code != 200:
                        raise BaseImageNotFound(f"blob {digest} of {self.registry}/{repository}: HTTP {resp.status_code}")
                    yield from resp.iter_bytes(chunk)
            except _UNREACHABLE as exc:
                raise RegistryUnreachable(f"registry {self.registry} broke off sending blob {digest}: {exc}") from exc

        return gen

    # -- push -------------------------------------------------------------------------------------
    def blob_exists(self, repository: str, digest: str) -> bool:
        """HEAD the blob in ``repository``; ``True`` when the registry already has it there."""
        resp = self.request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            scopes=(f"repository:{repository}:pull,push",),
            what=f"HEAD blob {digest}",
        )
        return resp.status_code == 200

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another repository; ``True`` when it did (201)."""
        resp = self.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            params={"mount": digest, "from": from_repository},
            scopes=(f"repository:{repository}:pull,push", f"repository:{from_repository}:pull"),
            headers={"Content-Length": "0"},
            what=f"mount of blob {digest}",
        )
        if resp.status_code == 201:
            return True
        if resp.status_code == 202:  # mount refused, an upload session was opened instead: close it
            try:
                self.request("DELETE", self._location(resp), scopes=(f"repository:{repository}:pull,push",))
            except RegistryProtocolError:
                pass
        return False

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        content: ContentFactory,
        *,
        chunk_size: int | None = None,
    ) -> None:
        """Upload one blob, streamed: one PUT (monolithic) or PATCH chunks then PUT.

        Args:
            repository: target repository.
            digest: the blob's ``sha256:`` digest (the registry checks it).
            size: its length in bytes.
            content: factory returning the blob's bytes as an iterator.
            chunk_size: bytes per PATCH; ``None`` for one monolithic PUT.
        """
        scopes = (f"repository:{repository}:pull,push",)
        start = self.request(
            "POST", f"/v2/{repository}/blobs/uploads/", scopes=scopes,
            headers={"Content-Length": "0"}, what=f"start of upload {digest}",
        )
        if start.status_code != 202:
            raise RegistryProtocolError(f"starting an upload answered HTTP {start.status_code}: {start.text[:200]}")
        location = self._location(start)
        octet = {"Content-Type": "application/octet-stream"}
        if chunk_size is None:
            url = str(httpx.URL(location).copy_merge_params({"digest": digest}))
            resp = self.request(
                "PUT", url, scopes=scopes, headers={**octet, "Content-Length": str(size)},
                content=content, what=f"upload of blob {digest}",
            )
        else:
            offset = 0
            buf = bytearray()
            for piece in content():
                buf += piece
                while len(buf) >= chunk_size:
                    location, offset = self._patch(location, scopes, bytes(buf[:chunk_size]), offset, digest)
                    del buf[:chunk_size]
            if buf:
                location, offset = self._patch(location, scopes, bytes(buf), offset, digest)
            url = str(httpx.URL(location).copy_merge_params({"digest": digest}))
            resp = self.request("PUT", url, scopes=scopes, headers={"Content-Length": "0"}, what=f"close of {digest}")
        if resp.status_code != 201:
            raise RegistryProtocolError(
                f"registry {self.registry} did not accept blob {digest} (HTTP {resp.status_code}: {resp.text[:200]})"
            )

    def _patch(self, location: str, scopes: tuple[str, ...], data: bytes, offset: int, digest: str) -> tuple[str, int]:
        end = offset + len(data) - 1
        resp = self.request(
            "PATCH", location, scopes=scopes, content=data,
            headers={"Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{end}",
                     "Content-Length": str(len(data))},
            what=f"chunk {offset}-{end} of blob {digest}",
        )
        if resp.status_code != 202:
            raise RegistryProtocolError(f"chunk upload of {digest} answered HTTP {resp.status_code}: {resp.text[:200]}")
        return self._location(resp), end + 1

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or its digest; returns the digest the registry reports."""
        resp = self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}", scopes=(f"repository:{repository}:pull,push",),
            headers={"Content-Type": media_type}, content=body, what=f"manifest {repository}:{reference}",
        )
        if resp.status_code != 201:
            raise RegistryProtocolError(
                f"registry {self.registry} refused the manifest for {repository}:{reference} "
                f"(HTTP {resp.status_code}: {resp.text[:300]})"
            )
        digest = sha256_digest(body)
        reported = resp.headers.get("docker-content-digest")
        if reported and reported != digest:
            raise RegistryProtocolError(f"registry stored manifest as {reported}, expected {digest}")
        return digest
