"""A program that ends without closing what it opened still ends.

Scripts that use the sync API and then exit — normally, with an uncaught error,
with ``sys.exit``, in the middle of a stream, while a call is still running in
another thread — must exit promptly with their own status. (Left to the garbage
collector, the sync facade's event-loop thread used to be waited for while the
interpreter finalised, when it could no longer run: the process hung for ever.)
"""

from __future__ import annotations

import subprocess
import sys
import time

from tests.servers import Fault, OllamaServer

_PRELUDE = """
import sys, threading
from llmfactory import LLMConfig, LLMFactory
factory = LLMFactory(database_url="sqlite://", discover=False)
llm = factory.create_llm(f"llama3.2:latest:ollama@{sys.argv[1]}", LLMConfig(retries=0))
"""

SCRIPTS: dict[str, tuple[str, int]] = {
    "a call, then the end": ('print(llm.send_user_message_sync("hi").content)', 0),
    "a call that fails, then an uncaught error": (
        'other = factory.create_llm("llama3.2:latest:ollama@127.0.0.1:9", '
        'LLMConfig(retries=0))\n'
        'try:\n    other.send_user_message_sync("hi")\nexcept Exception:\n    pass\n'
        'raise RuntimeError("the agent gave up")', 1),
    "sys.exit after a call": ('llm.send_user_message_sync("hi")\nsys.exit(3)', 3),
    "a stream abandoned after one chunk": (
        'stream = llm.stream_user_message_sync("one two three four")\n'
        'next(iter(stream))\nprint("abandoned")', 0),
    "a call still running in another thread": (
        'threading.Thread(target=llm.send_user_message_sync, args=("slow",), '
        'daemon=True).start()\nimport time\ntime.sleep(0.5)', 0),
}


def test_programs_that_do_not_close_still_exit(ollama_server: OllamaServer,
                                               cli_env: dict[str, str]) -> None:
    with OllamaServer() as stalling:  # for the call still running at exit
        stalling.push_fault(Fault.stall_before_headers(30), path="/api/chat", times=None)
        procs = {}
        started = time.monotonic()
        for name, (body, _) in SCRIPTS.items():
            host = stalling.host if "running" in name else ollama_server.host
            procs[name] = subprocess.Popen(
                [sys.executable, "-c", _PRELUDE + body, host], env=cli_env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        try:
            for name, proc in procs.items():
                out, err = proc.communicate(timeout=30)
                assert proc.returncode == SCRIPTS[name][1], (name, out, err)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        assert time.monotonic() - started < 20
