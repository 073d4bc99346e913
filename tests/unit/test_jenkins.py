"""python-jenkins at the REST contract level: a local server answers the Jenkins endpoints used."""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from urllib.parse import unquote, urlsplit

import pytest

from bluegreen.errors import UsageError
from bluegreen.jenkins.jobs import render_config

CRUMB = {"crumb": "c0ffee", "crumbRequestField": "Jenkins-Crumb"}


class FakeJenkins(http.server.BaseHTTPRequestHandler):
    """Just enough of Jenkins: crumbs, jobs, config.xml, builds, queue, progressive console."""

    state: dict = {}

    def log_message(self, *args):
        pass

    def _send(self, code, body=b"", headers=None, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self, body=b""):
        auth = self.headers.get("Authorization", "")
        self.state["requests"].append({
            "method": self.command, "path": self.path, "crumb": self.headers.get("Jenkins-Crumb"),
            "auth": base64.b64decode(auth.split()[1]).decode() if auth else None,
            "body": body.decode(errors="replace")})

    def do_GET(self):
        self._record()
        path = urlsplit(self.path).path
        st = self.state
        if path == "/crumbIssuer/api/json":
            return self._send(200, json.dumps(CRUMB).encode())
        if path.endswith("/api/json") and "/queue/item/" in path:
            st["queue_polls"] += 1
            item = {"id": 7, "why": "Waiting for next available executor"}
            if st["queue_polls"] > 1:
                item = {"id": 7, "executable": {"number": 42, "url": "x"}}
            return self._send(200, json.dumps(item).encode())
        if path.endswith("/42/api/json"):
            return self._send(200, json.dumps({"building": False, "result": st["result"],
                                               "number": 42}).encode())
        if "/42/logText/progressiveText" in path:
            start = int(self.path.split("start=")[1])
            chunks = st["console"]
            text = "".join(chunks)
            part = chunks[0] if start == 0 else text[start:]
            more = "true" if start == 0 else "false"
            size = len(part.encode()) + start
            return self._send(200, part.encode(), {"X-Text-Size": str(size), "X-More-Data": more},
                              "text/plain")
        if path.endswith("/api/json"):  # job_exists: job/NAME/api/json?tree=name
            name = unquote(path.split("/job/")[-1].split("/")[0])
            if name in st["jobs"]:
                return self._send(200, json.dumps({"name": name}).encode())
            return self._send(404)
        return self._send(404)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._record(body)
        path = urlsplit(self.path).path
        st = self.state
        if self.headers.get("Jenkins-Crumb") != CRUMB["crumb"]:
            return self._send(403)
        if path == "/createItem":
            st["jobs"][self.path.split("name=")[1]] = body.decode()
            return self._send(200)
        if path.endswith("/config.xml"):
            st["jobs"][unquote(path.split("/job/")[1].split("/")[0])] = body.decode()
            return self._send(200)
        if path.endswith("/build"):
            return self._send(201, headers={"Location": f"http://{self.headers['Host']}/queue/item/7/"})
        return self._send(404)


@pytest.fixture
def jenkins_server():
    FakeJenkins.state = {"requests": [], "jobs": {}, "queue_polls": 0, "result": "SUCCESS",
                         "console": ["Started\n[Pipeline] stage (Deploy)\n", "Finished: SUCCESS\n"]}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeJenkins)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeJenkins.state
    server.shutdown()


def bg(url, *args):
    env = dict(os.environ, JENKINS_URL=url, JENKINS_USER="deployer", JENKINS_API_TOKEN="t0k3n")
    p = subprocess.run([sys.executable, "-m", "bluegreen", "jenkins", *args], env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    return p.returncode, p.stdout, p.stderr


def test_config_xml_is_a_multibranch_job():
    xml = render_config("https://github.com/vfarcic/books-ms.git", script_path="Jenkinsfile",
                        credentials_id="github")
    root = ET.fromstring(xml)
    assert root.tag == "org.jenkinsci.plugins.workflow.multibranch.WorkflowMultiBranchProject"
    src = root.find("sources/data/jenkins.branch.BranchSource/source")
    assert src.get("class") == "jenkins.plugins.git.GitSCMSource"
    assert src.findtext("remote") == "https://github.com/vfarcic/books-ms.git"
    assert src.findtext("credentialsId") == "github"
    flt = src.find("traits/jenkins.scm.impl.trait.WildcardSCMHeadFilterTrait")
    assert flt.findtext("includes") == "*blue-green*"
    assert root.findtext("factory/scriptPath") == "Jenkinsfile"


@pytest.mark.parametrize("kwargs", [
    {"git_url": "https://x/y.git</remote><x>"}, {"git_url": "javascript:alert(1)"},
    {"git_url": "https://x/y.git", "includes": "*</includes>"},
    {"git_url": "https://x/y.git", "script_path": "../../etc/passwd"},
    {"git_url": "https://x/y.git", "credentials_id": "a b"},
])
def test_config_xml_refuses_values_that_break_out(kwargs):
    with pytest.raises(UsageError):
        render_config(**kwargs)


def test_create_then_update_job(jenkins_server):
    url, st = jenkins_server
    code, out, _ = bg(url, "job", "books-ms-blue-green", "--git-url", "https://github.com/vfarcic/books-ms.git")
    assert code == 0 and out.strip() == "books-ms-blue-green: created"
    ET.fromstring(st["jobs"]["books-ms-blue-green"])
    create = next(r for r in st["requests"] if r["method"] == "POST")
    assert create["path"] == "/createItem?name=books-ms-blue-green"
    assert create["crumb"] == "c0ffee" and create["auth"] == "deployer:t0k3n"
    code, out, _ = bg(url, "job", "books-ms-blue-green", "--git-url", "https://github.com/vfarcic/books-ms.git",
                      "--include", "*release*")
    assert code == 0 and out.strip() == "books-ms-blue-green: updated"
    assert "<includes>*release*</includes>" in st["jobs"]["books-ms-blue-green"]
    assert st["requests"][-1]["path"] == "/job/books-ms-blue-green/config.xml"


def test_index_and_build_stream_console_and_result(jenkins_server):
    url, st = jenkins_server
    code, _, _ = bg(url, "index", "books-ms-blue-green")
    assert code == 0
    assert any(r["method"] == "POST" and r["path"] == "/job/books-ms-blue-green/build?delay=0"
               for r in st["requests"])
    code, out, err = bg(url, "build", "books-ms-blue-green", "--branch", "feature/blue-green")
    assert code == 0, err
    assert out == "Started\n[Pipeline] stage (Deploy)\nFinished: SUCCESS\n"
    posts = [r["path"] for r in st["requests"] if r["method"] == "POST"]
    assert "/job/books-ms-blue-green/job/feature%252Fblue-green/build" in posts
    assert "#42: SUCCESS" in err
    assert "t0k3n" not in out + err


def test_failed_build_exits_1(jenkins_server):
    url, st = jenkins_server
    st["result"] = "FAILURE"
    st["console"] = ["Pre-integration tests failed\n", "Finished: FAILURE\n"]
    code, _, err = bg(url, "build", "books-ms-blue-green", "--branch", "blue-green")
    assert code == 1 and "FAILURE" in err


def test_jenkins_unreachable_exit_3():
    from bluegreen_dev.sandbox import free_port

    code, _, err = bg(f"http://127.0.0.1:{free_port()}", "index", "j")
    assert code == 3 and "Jenkins unreachable" in err


def test_missing_jenkins_url_exit_2():
    p = subprocess.run([sys.executable, "-m", "bluegreen", "jenkins", "index", "j"],
                       env={k: v for k, v in os.environ.items() if k != "JENKINS_URL"},
                       capture_output=True, text=True, check=False)
    assert p.returncode == 2 and "JENKINS_URL" in p.stderr
