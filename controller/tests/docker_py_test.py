"""The Python docker SDK (docker-py 7.1) against a running `wharf up`.

Run by controller/tests/docker_py.rs with WHARF_URL (https://127.0.0.1:PORT),
WHARF_CERT_DIR (ca.pem, cert.pem, key.pem) and WHARF_BUSYBOX_TAR / WHARF_RMTAG_TAR (docker
save tarballs: busybox:latest, and the same image as pytest-rm:latest). Each SDK call of
the issue's table is one test; the order is fixed (unittest sorts by name).
"""

import os
import sys
import time
import unittest
import uuid

import docker
import docker.errors
import docker.tls

UNIQUE = uuid.uuid4().hex[:8]


def client():
    cert_dir = os.environ["WHARF_CERT_DIR"]
    tls = docker.tls.TLSConfig(
        client_cert=(f"{cert_dir}/cert.pem", f"{cert_dir}/key.pem"),
        ca_cert=f"{cert_dir}/ca.pem",
        verify=True,
    )
    return docker.DockerClient(base_url=os.environ["WHARF_URL"], tls=tls, timeout=60)


class DockerPy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = client()

    def name(self, what):
        return f"py-{what}-{UNIQUE}"

    def test_00_ping_and_version(self):
        self.assertTrue(self.d.ping())
        v = self.d.version()
        self.assertEqual(v["ApiVersion"], "1.50")
        self.assertEqual(v["Os"], "linux")

    def test_01_images_load(self):
        with open(os.environ["WHARF_BUSYBOX_TAR"], "rb") as f:
            images = self.d.images.load(f.read())
        self.assertEqual(len(images), 1)
        self.assertIn("busybox:latest", images[0].tags)

    def test_02_images_list_and_get(self):
        tags = [t for img in self.d.images.list() for t in img.tags]
        self.assertIn("busybox:latest", tags)
        img = self.d.images.get("busybox")
        self.assertTrue(img.id.startswith("sha256:"))
        self.assertEqual(self.d.images.get(img.id).id, img.id)
        self.assertEqual(self.d.images.list(name="busybox")[0].id, img.id)

    def test_03_images_get_missing_raises_image_not_found(self):
        with self.assertRaises(docker.errors.ImageNotFound):
            self.d.images.get("nope")

    def test_10_containers_run_returns_output(self):
        out = self.d.containers.run("busybox", ["sh", "-c", "echo hi; echo err >&2"], remove=True)
        self.assertEqual(out, b"hi\n")
        both = self.d.containers.run("busybox", ["sh", "-c", "echo hi; echo err >&2"],
                                     remove=True, stderr=True)
        self.assertEqual(sorted(both.split()), [b"err", b"hi"])

    def test_11_containers_run_nonzero_raises_container_error(self):
        with self.assertRaises(docker.errors.ContainerError) as cm:
            self.d.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
        self.assertEqual(cm.exception.exit_status, 3)

    def test_12_containers_run_detached_get_list_logs_stop_remove(self):
        name = self.name("detached")
        c = self.d.containers.run("busybox", ["sh", "-c", "echo up; sleep 300"], detach=True,
                                  name=name, labels={"suite": "py"})
        self.assertEqual(len(c.id), 64)
        c.reload()
        self.assertEqual(c.status, "running")
        self.assertEqual(c.name, name)
        self.assertEqual(c.attrs["Config"]["Image"], "busybox")
        got = self.d.containers.get(name)
        self.assertEqual(got.id, c.id)
        listed = [x.name for x in self.d.containers.list(filters={"label": "suite=py"})]
        self.assertEqual(listed, [name])
        for _ in range(50):
            if c.logs() == b"up\n":
                break
            time.sleep(0.1)
        self.assertEqual(c.logs(), b"up\n")
        c.stop(timeout=1)
        c.reload()
        self.assertEqual(c.status, "exited")
        self.assertNotIn(name, [x.name for x in self.d.containers.list()])
        self.assertIn(name, [x.name for x in self.d.containers.list(all=True)])
        c.remove()
        with self.assertRaises(docker.errors.NotFound):
            self.d.containers.get(name)

    def test_13_containers_create_start_wait(self):
        c = self.d.containers.create("busybox", ["sh", "-c", "echo made; exit 4"],
                                     name=self.name("created"))
        self.assertEqual(self.d.containers.get(c.id).status, "created")
        c.start()
        self.assertEqual(c.wait()["StatusCode"], 4)
        self.assertEqual(c.logs(), b"made\n")
        c.remove()

    def test_14_containers_exec_run(self):
        c = self.d.containers.run("busybox", ["sleep", "300"], detach=True,
                                  name=self.name("exec"))
        try:
            res = c.exec_run(["sh", "-c", "echo from-exec; exit 5"])
            self.assertEqual(res.exit_code, 5)
            self.assertEqual(res.output, b"from-exec\n")
            res = c.exec_run("echo plain")
            self.assertEqual((res.exit_code, res.output), (0, b"plain\n"))
        finally:
            c.remove(force=True)

    def test_15_containers_get_missing_raises_not_found(self):
        with self.assertRaises(docker.errors.NotFound):
            self.d.containers.get("nope-" + UNIQUE)

    def test_20_volumes_create_list_get_remove(self):
        name = self.name("vol")
        v = self.d.volumes.create(name=name, labels={"suite": "py"})
        self.assertEqual(v.name, name)
        self.assertIn(name, [x.name for x in self.d.volumes.list()])
        got = self.d.volumes.get(name)
        self.assertEqual(got.attrs["Labels"], {"suite": "py"})
        self.assertEqual(got.attrs["Driver"], "local")
        got.remove()
        with self.assertRaises(docker.errors.NotFound):
            self.d.volumes.get(name)

    def test_30_images_remove(self):
        with open(os.environ["WHARF_RMTAG_TAR"], "rb") as f:
            self.d.images.load(f.read())
        self.assertIn("pytest-rm:latest", self.d.images.get("pytest-rm").tags)
        self.d.images.remove("pytest-rm:latest")
        with self.assertRaises(docker.errors.ImageNotFound):
            self.d.images.get("pytest-rm:latest")
        # The image itself is still there under its other tag.
        self.assertIn("busybox:latest", self.d.images.get("busybox").tags)

    def test_40_events_stream_decoded(self):
        start = int(time.time()) - 120
        c = self.d.containers.create("busybox", ["true"], name=self.name("events"))
        c.remove()
        evs = list(self.d.events(since=start, until=int(time.time()) + 2, decode=True,
                                 filters={"type": "container", "container": c.id}))
        self.assertEqual([e["Action"] for e in evs], ["create", "destroy"])
        self.assertEqual(evs[0]["Actor"]["Attributes"]["name"], self.name("events"))
        self.assertEqual(evs[0]["Actor"]["ID"], c.id)


if __name__ == "__main__":
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)
