"""docker-py 7.1 `images.build` against a running `wharf up` (run by build.rs).

The context is a raw tar (`custom_context=True`), which the SDK sends as it is, so the
`.dockerignore` in it is applied by Wharf, not by the client. Env: WHARF_URL,
WHARF_CERT_DIR.
"""

import io
import os
import tarfile
import unittest

import docker
import docker.errors
import docker.tls


def client():
    cert_dir = os.environ["WHARF_CERT_DIR"]
    tls = docker.tls.TLSConfig(
        client_cert=(f"{cert_dir}/cert.pem", f"{cert_dir}/key.pem"),
        ca_cert=f"{cert_dir}/ca.pem",
        verify=True,
    )
    return docker.DockerClient(base_url=os.environ["WHARF_URL"], tls=tls, timeout=60)


def context(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


class Build(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = client()

    def test_build_applies_dockerignore_on_the_server(self):
        ctx = context(
            {
                "Dockerfile": b"FROM busybox\nCOPY . /ctx/\nCMD [\"ls\", \"-A\", \"/ctx\"]\n",
                ".dockerignore": b"*.secret\n",
                "app.py": b"print(1)\n",
                "key.secret": b"hunter2\n",
            }
        )
        image, logs = self.d.images.build(fileobj=ctx, custom_context=True, tag="pybuild:1")
        self.assertIn("pybuild:1", image.tags)
        text = "".join(l.get("stream", "") for l in logs)
        self.assertIn("Successfully built", text)
        out = self.d.containers.run("pybuild:1", remove=True).decode()
        self.assertEqual(sorted(out.split()), [".dockerignore", "Dockerfile", "app.py"])

    def test_failing_run_raises_build_error(self):
        # The step prints nothing for a while: the keep-alive whitespace must not upset the SDK.
        ctx = context({"Dockerfile": b"FROM busybox\nRUN sleep 2 && exit 7\n"})
        with self.assertRaises(docker.errors.BuildError) as cm:
            self.d.images.build(fileobj=ctx, custom_context=True, forcerm=True)
        self.assertIn("returned a non-zero code: 7", str(cm.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
