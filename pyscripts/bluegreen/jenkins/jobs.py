"""``bluegreen jenkins``: the multibranch job of the book (``books-ms-blue-green``) via python-jenkins.

Create or update the job from ``resources/jenkins/multibranch-config.xml.j2``, trigger branch
indexing, trigger one branch's build, stream its console and exit with its result.
Credentials come from ``JENKINS_URL``, ``JENKINS_USER`` and ``JENKINS_API_TOKEN`` only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
import urllib.parse

from bluegreen import templates, validate
from bluegreen.errors import ExitStatus, OperationFailed, Unreachable, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

JOB_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,127})*")
BRANCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
FILTER_RE = re.compile(r"[A-Za-z0-9*?._/ -]{0,500}")
GIT_URL_RE = re.compile(r"(?:https?://|ssh://|git@|file://)[A-Za-z0-9._~:/?#@!$+,;=%-]+")
SCRIPT_RE = re.compile(r"[A-Za-z0-9._/-]{1,200}")
CRED_RE = re.compile(r"[A-Za-z0-9._-]{0,128}")


def _check(value: str, regex: re.Pattern[str], what: str) -> str:
    if isinstance(value, str) and ".." in value:
        raise UsageError(f"invalid {what} {value!r}")
    return validate.matching(regex, value, what)


def render_config(git_url: str, includes: str = "*blue-green*", excludes: str = "",
                  script_path: str = "Jenkinsfile", credentials_id: str = "",
                  description: str = "") -> str:
    """The multibranch job's config.xml; every value is validated first."""
    _check(git_url, GIT_URL_RE, "git URL")
    _check(includes, FILTER_RE, "branch include filter")
    _check(excludes, FILTER_RE, "branch exclude filter")
    _check(script_path, SCRIPT_RE, "script path")
    _check(credentials_id, CRED_RE, "credentials id")
    source_id = hashlib.sha1(git_url.encode(), usedforsecurity=False).hexdigest()[:16]
    return templates.render("jenkins/multibranch-config.xml.j2", git_url=git_url,
                            includes=includes, excludes=excludes, script_path=script_path,
                            credentials_id=credentials_id, source_id=source_id,
                            description=description or "Blue-green deployment (bluegreen)")


class JenkinsJobs:
    """The few Jenkins operations the blue-green job needs."""

    def __init__(self, url: str, user: str | None = None, token: str | None = None,
                 timeout: float = 30.0) -> None:
        import jenkins  # heavy: imported on first use

        self.url = url.rstrip("/") + "/"
        self._mod = jenkins
        self.server = jenkins.Jenkins(self.url, username=user, password=token, timeout=timeout)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import requests

        try:
            return fn(*args, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise Unreachable("Jenkins", self.url, type(exc).__name__) from exc
        except self._mod.JenkinsException as exc:
            raise OperationFailed(f"Jenkins: {str(exc).splitlines()[0][:200]}") from exc

    def upsert_job(self, name: str, config_xml: str) -> str:
        _check(name, JOB_RE, "job name")
        if self._call(self.server.job_exists, name):
            self._call(self.server.reconfig_job, name, config_xml)
            return "updated"
        self._call(self.server.create_job, name, config_xml)
        return "created"

    def index(self, name: str) -> None:
        """Trigger branch indexing (a multibranch job's 'Scan now')."""
        import requests

        _check(name, JOB_RE, "job name")
        url = self.server.build_job_url(name) + "?delay=0"
        self._call(self.server.jenkins_request, requests.Request("POST", url))

    def branch_job(self, name: str, branch: str) -> str:
        _check(name, JOB_RE, "job name")
        _check(branch, BRANCH_RE, "branch")
        return f"{name}/{urllib.parse.quote(branch, safe='')}"

    def build(self, job: str) -> int:
        return int(self._call(self.server.build_job, job))

    def wait_started(self, queue_id: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            item = self._call(self.server.get_queue_item, queue_id)
            if item.get("cancelled"):
                raise OperationFailed(f"queue item {queue_id} was cancelled")
            executable = item.get("executable")
            if executable and "number" in executable:
                return int(executable["number"])
            if time.monotonic() >= deadline:
                raise OperationFailed(f"build did not start within {timeout:g}s: "
                                      f"{item.get('why') or 'still queued'}")
            time.sleep(1)

    def stream(self, job: str, number: int, out: Any, timeout: float,
               poll: float = 1.0) -> str:
        """Copy the progressive console to ``out`` until the build ends; return its result."""
        import requests

        folder_url, short = self.server._get_job_folder(job)
        base = urllib.parse.urljoin(
            self.url, f"{folder_url}job/{urllib.parse.quote(short)}/{number}/")
        start, deadline = 0, time.monotonic() + timeout
        while True:
            resp = self._call(self.server.jenkins_request, requests.Request(
                "GET", f"{base}logText/progressiveText?start={start}"))
            if resp.text:
                out.write(resp.text)
                out.flush()
            start = int(resp.headers.get("X-Text-Size", start))
            if resp.headers.get("X-More-Data") != "true":
                break
            if time.monotonic() >= deadline:
                raise OperationFailed(f"build {job} #{number} still running after {timeout:g}s")
            time.sleep(poll)
        for _ in range(30):
            info = self._call(self.server.get_build_info, job, number)
            if not info.get("building") and info.get("result"):
                return str(info["result"])
            time.sleep(poll)
        raise OperationFailed(f"build {job} #{number} has no result")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("jenkins", help="manage the multibranch job with python-jenkins "
                       "($JENKINS_URL, $JENKINS_USER, $JENKINS_API_TOKEN)", parents=[common])
    jsub = p.add_subparsers(dest="jenkins_command", metavar="ACTION", parser_class=type(p))
    jsub.required = True
    job = jsub.add_parser("job", help="create or update the multibranch job", parents=[common])
    job.add_argument("job", metavar="JOB")
    job.add_argument("--git-url", required=True)
    job.add_argument("--include", default="*blue-green*", help="branch filter [*blue-green*]")
    job.add_argument("--exclude", default="")
    job.add_argument("--script-path", default="Jenkinsfile")
    job.add_argument("--credentials-id", default="")
    job.add_argument("--print", dest="print_only", action="store_true",
                     help="print the config.xml; contact nobody")
    idx = jsub.add_parser("index", help="trigger branch indexing", parents=[common])
    idx.add_argument("job", metavar="JOB")
    b = jsub.add_parser("build", help="build one branch, stream its console, exit with its result",
                        parents=[common])
    b.add_argument("job", metavar="JOB")
    b.add_argument("--branch", required=True)
    b.add_argument("--timeout", type=float, default=3600.0)
    b.add_argument("--no-wait", dest="wait", action="store_false")


def _jobs_from_env() -> JenkinsJobs:
    url = os.environ.get("JENKINS_URL")
    if not url:
        raise UsageError("JENKINS_URL is not set")
    if not urllib.parse.urlsplit(url).scheme.startswith("http"):
        raise UsageError(f"invalid JENKINS_URL {url!r}")
    return JenkinsJobs(url, os.environ.get("JENKINS_USER"), os.environ.get("JENKINS_API_TOKEN"))


def dispatch(opts: dict[str, Any]) -> int:
    action = opts["jenkins_command"]
    if action == "job":
        _check(opts["job"], JOB_RE, "job name")
        xml = render_config(opts["git_url"], opts["include"], opts["exclude"],
                            opts["script_path"], opts["credentials_id"])
        if opts["print_only"] or opts.get("dry_run"):
            sys.stdout.write(xml)
            return ExitStatus.OK
        print(f"{opts['job']}: {_jobs_from_env().upsert_job(opts['job'], xml)}")
        return ExitStatus.OK
    jobs = _jobs_from_env()
    if action == "index":
        if opts.get("dry_run"):
            print(f"would trigger branch indexing of {opts['job']}")
            return ExitStatus.OK
        jobs.index(opts["job"])
        print(f"{opts['job']}: branch indexing triggered")
        return ExitStatus.OK
    target = jobs.branch_job(opts["job"], opts["branch"])
    if opts.get("dry_run"):
        print(f"would build {target}")
        return ExitStatus.OK
    queue_id = jobs.build(target)
    print(f"{target}: queued as item {queue_id}", file=sys.stderr)
    if not opts["wait"]:
        return ExitStatus.OK
    number = jobs.wait_started(queue_id, opts["timeout"])
    print(f"{target}: build #{number} started", file=sys.stderr)
    result = jobs.stream(target, number, sys.stdout, opts["timeout"])
    print(f"{target} #{number}: {result}", file=sys.stderr)
    return ExitStatus.OK if result == "SUCCESS" else ExitStatus.FAILED
