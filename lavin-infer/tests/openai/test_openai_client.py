"""The OpenAI-compatible API of `lavin-infer serve`, driven by the official `openai` client.

Starts the real binary (LAVIN_INFER_BIN) with the bundled tiny model on a free loopback port,
with an API key, and checks what a user of the client relies on. Run by
lavin-infer/tests/openai_client.rs (which sets LAVIN_INFER_BIN); standalone:
    LAVIN_INFER_BIN=target/debug/lavin-infer python -m unittest -v test_openai_client
"""

import base64
import os
import re
import struct
import subprocess
import threading
import unittest
import zlib

import openai

KEY = "test-key-123"
MODEL = "lavin"
MAX_NEW = 16


class Server:
    """`lavin-infer serve` on port 0; the port comes from its start-up line."""

    def __init__(self):
        binary = os.environ.get("LAVIN_INFER_BIN")
        if not binary:
            raise RuntimeError("LAVIN_INFER_BIN must name the lavin-infer binary")
        cmd = [binary, "serve", "--port", "0", "--max-seq-len", "160",
               "--max-new-tokens", str(MAX_NEW), "--max-gen-len", "8", "--api-key", KEY]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.log = []
        found = {}
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"on http://([0-9.]+):(\d+)/", line)
                if m and not ready.is_set():
                    found["url"] = f"http://{m.group(1)}:{m.group(2)}"
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("lavin-infer serve did not start:\n" + "".join(self.log))
        self.url = found["url"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def tiny_png(w=8, h=8):
    """A valid RGB PNG (a gradient), written by hand: no imaging package needed."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    rows = b"".join(b"\x00" + bytes(c for x in range(w) for c in (x * 30, y * 30, 90))
                    for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


class OpenAIClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.client = openai.OpenAI(base_url=cls.server.url + "/v1", api_key=KEY, max_retries=0,
                                   timeout=120)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def chat(self, text="Describe a cat.", **kw):
        kw.setdefault("max_tokens", 10)
        return self.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}], **kw)

    def test_models_list_and_retrieve(self):
        ids = [m.id for m in self.client.models.list()]
        self.assertEqual(ids, [MODEL])
        self.assertEqual(self.client.models.retrieve(MODEL).id, MODEL)
        with self.assertRaises(openai.NotFoundError):
            self.client.models.retrieve("gpt-4o")

    def test_chat_and_stream_with_usage(self):
        r = self.chat(temperature=0.8, seed=5)
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(len(r.choices), 1)
        text = r.choices[0].message.content
        self.assertIsInstance(text, str)
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        self.assertGreater(r.usage.prompt_tokens, 0)
        self.assertLessEqual(r.usage.completion_tokens, 10)
        chunks = list(self.chat(temperature=0.8, seed=5, stream=True,
                                stream_options={"include_usage": True}))
        last = chunks[-1]
        self.assertEqual(last.choices, [])
        self.assertIsNotNone(last.usage)
        self.assertEqual(last.usage.completion_tokens, r.usage.completion_tokens)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        # Same seed, same request: the streamed text is the non-streamed reply.
        self.assertEqual(streamed.strip(), text)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        self.assertEqual(finishes[-1], r.choices[0].finish_reason)

    def test_stop_string_is_not_returned(self):
        full = self.chat(temperature=0, max_tokens=MAX_NEW).choices[0].message.content
        words = [w for w in re.findall(r"\S+", full)]
        self.assertTrue(words, f"the model said nothing: {full!r}")
        # A piece of the greedy reply past its start, without whitespace.
        word = max(words[len(words) // 2:], key=len)
        stop = word[-2:] if len(word) > 1 else word
        at = full.find(stop, 1)
        if at < 0:
            at = full.find(stop)
        expected = full[:at].strip()
        for stream in (False, True):
            if stream:
                chunks = self.chat(temperature=0, max_tokens=MAX_NEW, stop=[stop, "\u2603\u2603"],
                                   stream=True)
                got = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                got = got.strip()
            else:
                r = self.chat(temperature=0, max_tokens=MAX_NEW, stop=stop)
                got = r.choices[0].message.content
                self.assertEqual(r.choices[0].finish_reason, "stop")
            self.assertEqual(got, expected, f"stop {stop!r} in {full!r} (stream={stream})")
            self.assertNotIn(stop, got[max(0, at - 1):])

    def test_seeds(self):
        same = {self.chat(temperature=1.0, top_p=1.0, seed=1234).choices[0].message.content
                for _ in range(2)}
        self.assertEqual(len(same), 1, same)
        # Different seeds do sample differently at temperature 1 ...
        seeded = {self.chat(temperature=1.0, top_p=1.0, seed=s).choices[0].message.content
                  for s in range(6)}
        self.assertGreater(len(seeded), 1, seeded)
        # ... and requests without a seed each get a fresh one (not one fixed default).
        fresh = {self.chat(temperature=1.0, top_p=1.0).choices[0].message.content
                 for _ in range(6)}
        self.assertGreater(len(fresh), 1, fresh)

    def test_n_choices(self):
        r = self.chat(temperature=1.0, top_p=1.0, seed=7, n=3)
        self.assertEqual([c.index for c in r.choices], [0, 1, 2])
        # Choice i samples with seed 7 + i: choice 1 is the reply to seed 8.
        alone = self.chat(temperature=1.0, top_p=1.0, seed=8).choices[0].message.content
        self.assertEqual(r.choices[1].message.content, alone)
        with self.assertRaises(openai.BadRequestError) as e:
            self.chat(n=100)
        self.assertIn("n", e.exception.body.get("param"))

    def test_max_tokens_is_clamped(self):
        r = self.chat(temperature=0, max_tokens=100000)
        self.assertLessEqual(r.usage.completion_tokens, MAX_NEW)
        r = self.chat(temperature=0, max_tokens=100000, max_completion_tokens=2)
        self.assertLessEqual(r.usage.completion_tokens, 2)

    def test_errors(self):
        bad = "data:image/png;base64," + base64.b64encode(b"not a png").decode()
        with self.assertRaises(openai.BadRequestError) as e:
            self.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": bad}},
                {"type": "text", "text": "What is it?"}]}])
        self.assertIn("bad image", e.exception.message)
        with self.assertRaises(openai.BadRequestError) as e:
            self.chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
        self.assertEqual(e.exception.body.get("param"), "tools")
        wrong = openai.OpenAI(base_url=self.server.url + "/v1", api_key="wrong", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            wrong.models.list()

    def test_an_image_works(self):
        url = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
        r = self.client.chat.completions.create(model=MODEL, max_tokens=4, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "What is it?"}]}])
        self.assertGreater(r.usage.prompt_tokens, 10)


if __name__ == "__main__":
    unittest.main(verbosity=2)
