"""A Hub-compatible server for tests: the routes `huggingface_hub`, `datasets` and `transformers` use to
read a repo, and the ones `HfApi.create_repo` / `upload_folder` use to write one, on 127.0.0.1.

Repos live in memory as git-like commits (path -> bytes) on a `main` branch. Files are plain git blobs:
preupload answers "regular" for every file, so uploads arrive base64 in the commit payload and downloads
are served directly (no LFS, no Xet, no redirects) with the headers the clients read: `X-Repo-Commit`,
`ETag` (the git blob sha1, the `oid` of tree listings) and `Content-Length`, plus byte ranges.
Errors carry the Hub's `X-Error-Code`, so clients raise their usual exceptions (a missing optional file
is an `EntryNotFoundError`). Every request is logged in `HubServer.log`.

    with HubServer() as hub:
        hub.add_folder("dataset", "org/name", folder)   # HF_ENDPOINT=hub.url
        ...
        hub.files("dataset", "org/name")                # {path: bytes} at main

`network_guard()` is for client processes: it refuses (and records) any connection or DNS lookup of a
host other than 127.0.0.1/localhost, so a test can prove nothing left the machine.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, repo_type: str, repo_id: str):
        self.type, self.id = repo_type, repo_id
        self.commits: dict[str, dict] = {}  # sha -> {"files", "parent", "title", "date"}
        self.branches: dict[str, str] = {}
        self.commit({}, "initial commit")

    def commit(self, files: dict[str, bytes], title: str, branch: str = "main") -> str:
        parent = self.branches.get(branch)
        digest = hashlib.sha1(json.dumps([parent, title, len(self.commits),
                                          sorted((p, git_blob_sha(b)) for p, b in files.items())]).encode())
        sha = digest.hexdigest()
        date = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        self.commits[sha] = {"files": dict(files), "parent": parent, "title": title, "date": date}
        self.branches[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        matches = [sha for sha in self.commits if sha.startswith(revision)] if len(revision) >= 7 else []
        return matches[0] if len(matches) == 1 else None


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message)
        self.status, self.code = status, code


class HubServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.log: list[dict] = []
        self.lock = threading.RLock()
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ test-side helpers

    def create_repo(self, repo_type: str, repo_id: str) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, None, f"You already created this {repo_type} repo")
            repo = self.repos[repo_type, repo_id] = Repo(repo_type, repo_id)
            return repo

    def add_folder(self, repo_type: str, repo_id: str, folder: str | Path) -> str:
        """Create a repo holding every file of `folder`; returns the commit sha of main."""
        folder = Path(folder)
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        with self.lock:
            return self.create_repo(repo_type, repo_id).commit(files, f"Add {folder.name}")

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        with self.lock:
            repo = self.repos[repo_type, repo_id]
            return dict(repo.commits[repo.resolve(revision)]["files"])

    def history(self, repo_type: str, repo_id: str) -> list[str]:
        """Commit titles on main, newest first."""
        with self.lock:
            repo, titles = self.repos[repo_type, repo_id], []
            sha = repo.branches["main"]
            while sha is not None:
                titles.append(repo.commits[sha]["title"])
                sha = repo.commits[sha]["parent"]
            return titles

    # ------------------------------------------------------------------ routes

    def repo(self, repo_type: str, rest: str) -> tuple[Repo, str]:
        """Split `ns/name/remainder` (or `name/remainder`) into a known repo and the remainder."""
        parts = rest.split("/")
        with self.lock:
            for n in (2, 1):
                key = (repo_type, "/".join(parts[:n]))
                if len(parts) >= n and key in self.repos:
                    return self.repos[key], "/".join(parts[n:])
        raise HubError(404, "RepoNotFound", f"Repository not found: {repo_type} {rest}")

    def snapshot(self, repo: Repo, revision: str) -> tuple[str, dict[str, bytes]]:
        sha = repo.resolve(unquote(revision))
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}")
        return sha, repo.commits[sha]["files"]

    def info(self, repo: Repo, revision: str) -> dict:
        sha, files = self.snapshot(repo, revision)
        commit = repo.commits[sha]
        return {"_id": sha[:24], "id": repo.id, "author": repo.id.split("/")[0], "sha": sha, "private": False,
                "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                "createdAt": commit["date"], "lastModified": commit["date"],
                "siblings": [{"rfilename": p, "size": len(b), "blobId": git_blob_sha(b)}
                             for p, b in sorted(files.items())]}

    def entries(self, repo: Repo, sha: str, files: dict[str, bytes], paths: list[str], expand: bool) -> list[dict]:
        last = {"id": sha, "title": repo.commits[sha]["title"], "date": repo.commits[sha]["date"]}
        folders = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        out = []
        for path in paths:
            if path in files:
                entry = {"type": "file", "oid": git_blob_sha(files[path]), "size": len(files[path]), "path": path}
            elif path in folders:
                inside = sorted(git_blob_sha(b) for p, b in files.items() if p.startswith(path + "/"))
                entry = {"type": "directory", "oid": hashlib.sha1("".join(inside).encode()).hexdigest(),
                         "size": 0, "path": path}
            else:
                continue
            out.append({**entry, "lastCommit": last} if expand else entry)
        return out

    def tree(self, repo: Repo, revision: str, path: str, recursive: bool, expand: bool) -> list[dict]:
        sha, files = self.snapshot(repo, revision)
        path = unquote(path).strip("/")
        prefix = path + "/" if path else ""
        below = {p[len(prefix):] for p in files if p.startswith(prefix)}
        if path and not below:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {revision}")
        names = set()
        for rel in below:
            parts = rel.split("/")
            names.update("/".join(parts[:i]) for i in range(1, len(parts) + 1) if recursive or i == 1)
        # The Hub lists folders before files, each group sorted.
        listed = self.entries(repo, sha, files, [prefix + n for n in sorted(names)], expand)
        return sorted(listed, key=lambda e: (e["type"] != "directory", e["path"]))

    def preupload(self, repo: Repo, revision: str, body: dict) -> dict:
        _, files = self.snapshot(repo, revision)
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                           "oid": git_blob_sha(files[f["path"]]) if f["path"] in files else None}
                          for f in body["files"]]}

    def commit(self, repo: Repo, revision: str, ndjson: bytes) -> dict:
        branch = unquote(revision)
        with self.lock:
            if branch not in repo.branches:
                raise HubError(404, "RevisionNotFound", f"Invalid branch: {branch}")
            files, header = dict(repo.commits[repo.branches[branch]]["files"]), {}
            for line in ndjson.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    header = value
                    if value.get("parentCommit") not in (None, repo.branches[branch]):
                        raise HubError(412, None, "A commit has happened since. Please refresh and try again.")
                elif key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, None, f"unsupported encoding {value.get('encoding')}")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    files = {p: b for p, b in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
                else:  # lfsFile and copies: never asked for, since preupload says "regular"
                    raise HubError(400, None, f"unsupported commit operation {key}")
            sha = repo.commit(files, header.get("summary", ""), branch)
        url = f"{self.url}/{PREFIX[repo.type]}{repo.id}/commit/{sha}"
        return {"success": True, "commitOid": sha, "commitUrl": url, "pullRequestUrl": None}

    @staticmethod
    def validate_yaml(card: str) -> tuple[int, dict, dict]:
        """The README's front matter must be a YAML mapping (the Hub checks its schema too; we do not)."""
        import yaml

        match = re.match(r"^---\n(.*?)\n---\n", card, re.S)
        if not match:
            return 200, {}, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}
        try:
            metadata = yaml.safe_load(match[1])
        except yaml.YAMLError as error:
            metadata = str(error)
        if not isinstance(metadata, dict):
            return 400, {"X-Error-Message": "Invalid metadata"}, {"errors": [{"message": f"not a mapping: {metadata}"}]}
        return 200, {}, {"errors": [], "warnings": []}

    def handle(self, method: str, path: str, query: dict, body: bytes, headers) -> tuple[int, dict, bytes | dict]:
        if method == "POST" and path == "/api/repos/create":
            request = json.loads(body)
            repo_type = request.get("type") or "model"
            repo_id = "/".join(filter(None, (request.get("organization"), request["name"])))
            url = f"{self.url}/{PREFIX[repo_type]}{repo_id}"
            try:
                self.create_repo(repo_type, repo_id)
            except HubError as error:  # the Hub's 409 still names the repo's url
                return error.status, {"X-Error-Message": str(error)}, {"error": str(error), "url": url}
            return 200, {}, {"url": url, "name": repo_id}
        if method == "POST" and path == "/api/validate-yaml":
            return self.validate_yaml(json.loads(body)["content"])
        if method == "GET" and path == "/api/whoami-v2":
            return 200, {}, {"type": "user", "name": "silkie-test", "orgs": [], "auth": {}}
        match = re.fullmatch(r"/api/(model|dataset|space)s/(.+)", path)
        if match:
            repo, action = self.repo(match[1], match[2])
            verb, _, rest = action.partition("/")
            revision, _, subpath = rest.partition("/")
            flag = lambda name: query.get(name, ["false"])[0].lower() in ("1", "true")  # noqa: E731
            if method == "GET" and verb in ("", "revision"):
                return 200, {}, self.info(repo, revision or "main")
            if method == "GET" and verb == "tree":
                return 200, {}, self.tree(repo, revision, subpath, flag("recursive"), flag("expand"))
            if method == "POST" and verb == "paths-info":
                form = parse_qs(body.decode())
                sha, files = self.snapshot(repo, revision)
                expand = form.get("expand", ["False"])[0].lower() == "true"
                return 200, {}, self.entries(repo, sha, files, [p.strip("/") for p in form.get("paths", [])], expand)
            if method == "POST" and verb == "preupload":
                return 200, {}, self.preupload(repo, revision, json.loads(body))
            if method == "POST" and verb == "commit":
                return 200, {}, self.commit(repo, revision, body)
            raise HubError(404, None, f"no route {method} {path}")
        match = re.fullmatch(r"/(?:(dataset|space)s/)?(.+?)/resolve/([^/]+)/(.+)", path)
        if match and method in ("GET", "HEAD"):
            repo, rest = self.repo(match[1] or "model", match[2])
            if rest:
                raise HubError(404, "RepoNotFound", f"Repository not found: {match[2]}")
            sha, files = self.snapshot(repo, match[3])
            name = unquote(match[4])
            if name not in files:
                raise HubError(404, "EntryNotFound", f"{name} does not exist on {unquote(match[3])}")
            data = files[name]
            meta = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(data)}"', "Accept-Ranges": "bytes",
                    "Content-Type": "application/octet-stream"}
            ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", headers.get("Range", ""))
            if ranged and ranged[0] != "bytes=-":
                start = int(ranged[1]) if ranged[1] else max(len(data) - int(ranged[2]), 0)
                end = min(int(ranged[2]), len(data) - 1) if ranged[1] and ranged[2] else len(data) - 1
                if start >= len(data):
                    return 416, {**meta, "Content-Range": f"bytes */{len(data)}"}, b""
                return 206, {**meta, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start:end + 1]
            return 200, meta, data
        raise HubError(404, None, f"no route {method} {path}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: HubServer

    def log_message(self, *args) -> None:  # the hub's own log replaces stderr noise
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        hub, url = self.server_hub, urlsplit(self.path)
        body = self._body()
        try:
            status, headers, payload = hub.handle(self.command, url.path, parse_qs(url.query), body, self.headers)
        except HubError as error:
            status, headers, payload = error.status, {"X-Error-Message": str(error)}, {"error": str(error)}
            if error.code:
                headers["X-Error-Code"] = error.code
        if not isinstance(payload, bytes):
            payload = json.dumps(payload).encode()
            headers = {"Content-Type": "application/json", **headers}
        with hub.lock:
            hub.log.append({"method": self.command, "path": url.path, "query": url.query, "status": status,
                            "host": self.headers.get("Host"),
                            "authorization": self.headers.get("Authorization")})
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(payload))}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve


def network_guard() -> list[str]:
    """In a client process: refuse every DNS lookup or connection to a host other than 127.0.0.1/localhost.

    Returns the list that records each refused host (empty when nothing tried to leave)."""
    refused: list[str] = []
    getaddrinfo, connect = socket.getaddrinfo, socket.socket.connect

    def check(host) -> None:
        host = host.decode() if isinstance(host, bytes) else str(host)
        if host not in LOCAL_HOSTS:
            refused.append(host)
            raise OSError(f"network_guard: refused a connection to {host}")

    def guarded_getaddrinfo(host, *args, **kwargs):
        check(host)
        return getaddrinfo(host, *args, **kwargs)

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            check(address[0])
        return connect(sock, address)

    socket.getaddrinfo = guarded_getaddrinfo
    socket.socket.connect = guarded_connect
    return refused


__all__ = ["HubServer", "git_blob_sha", "network_guard"]
