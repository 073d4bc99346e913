"""The seed's two-service application as local images, built from static busybox (no registry).

``bluegreen-servicea:v1`` answers ``world!`` on port 5000 (``v2``: ``new world!``);
``bluegreen-serviceb:v1`` calls ``$dep_endpoint`` and prepends ``Hello `` on port 5001
(``v2``: ``Welcome to the ``). Both answer ``GET /health`` and name their release in the
``X-Version`` header (serviceB also its dependency's in ``X-Dep-Version``).
"""

from __future__ import annotations

from bluegreen import templates
from bluegreen.errors import OperationFailed
from bluegreen_dev.sandbox import build_busybox_image

# image -> (SERVICE build arg, container port)
APP_IMAGES = {"bluegreen-servicea": ("servicea", 5000), "bluegreen-serviceb": ("serviceb", 5001)}
APP_TAGS = ("v1", "v2")


def sample_app_refs() -> list[str]:
    return [f"{image}:{tag}" for image in APP_IMAGES for tag in APP_TAGS]


def build_sample_app_images(refs: list[str] | None = None) -> list[str]:
    """Build the images named in ``refs`` (default all four); skip those that exist.
    Returns the references built now."""
    import docker

    client = docker.from_env(timeout=120)
    src = templates.resource_dir() / "sample-app"
    built = []
    for ref in refs or sample_app_refs():
        image, _, tag = ref.partition(":")
        if image not in APP_IMAGES or tag not in APP_TAGS:
            raise OperationFailed(f"unknown sample application image {ref!r}")
        service, port = APP_IMAGES[image]
        if build_busybox_image(client, ref, src, ["Dockerfile", "start.sh", f"{service}.cgi"],
                               {"SERVICE": service, "VERSION": tag, "PORT": str(port)}):
            built.append(ref)
    return built


if __name__ == "__main__":
    print("\n".join(build_sample_app_images()) or "all sample application images exist")
