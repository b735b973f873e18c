"""``fieldstation init --guided`` through a real pseudo-terminal (``pty.fork``): it asks field
by field with the schema's descriptions and defaults, asks a wrong answer again with
``validate``'s words, and writes ``init``'s commented file with the answers in it."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
import tomllib
from pathlib import Path

from fieldstation.cli.guided import QUESTIONS, description, set_value
from fieldstation.config import load_config, template_text


class Terminal:
    """A child process on a pseudo-terminal: read what it prints, type answers."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the command on the terminal
            os.chdir(cwd)
            os.environ["COLUMNS"] = "200"
            os.execv(argv[0], argv)
        self.pid, self.fd, self.seen = pid, fd, ""

    def expect(self, text: str, timeout: float = 60.0) -> str:
        """Read until ``text`` has been printed (since the last expect); returns what was."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not printed; got:\n{self.seen}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    chunk = ""
                assert chunk, f"{text!r} not printed before the end; got:\n{self.seen}"
                self.seen += chunk.replace("\r\n", "\n")
        before, _, self.seen = self.seen.partition(text)
        return before + text

    def type(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def test_guided_init_asks_validates_and_writes_the_commented_file(tmp_path: Path) -> None:
    term = Terminal(
        [sys.executable, "-m", "fieldstation.cli", "init", "pond", "--guided"], tmp_path
    )
    answers = {
        "station.id": ["pond 1", "pond-1"],  # a space is refused, then a good id
        "station.name": [""],  # the default: the id just given
        "station.latitude": ["100", "47.5"],
        "station.longitude": [""],
        "station.elevation": ["312"],
        "station.timezone": ["Mars/Olympus", "Europe/Zurich"],
        "sensors[0].sample_rate": ["fast", "32kHz"],
        "sensors[0].chunk": ["30s"],
        "sensors[0].schedule": ["dawn_chorus"],
    }
    assert list(answers) == [q.path for q in QUESTIONS]
    shown: dict[str, str] = {}  # printed before and between the prompts of each question
    defaults: dict[str, str] = {}
    for question in QUESTIONS:
        for answer in answers[question.path]:
            before = term.expect(f"{question.path} [")
            shown[question.path] = shown.get(question.path, "") + before
            defaults[question.path] = term.expect("]: ")[: -len("]: ")]
            term.type(answer)
    rest = term.expect("wrote pond/station.toml")
    assert term.wait() == 0, rest
    # descriptions and defaults from the schema and the template
    assert description(QUESTIONS[2]) in shown["station.latitude"]
    assert "Latitude, decimal degrees" in shown["station.latitude"]
    assert defaults["station.latitude"] == "51.752" and defaults["station.id"] == "default"
    assert defaults["station.name"] == "pond-1"  # the name follows the id, as with --id
    assert defaults["sensors[0].schedule"] == "always"
    # wrong answers asked again, in validate's words
    assert "station.latitude: Input should be less than or equal to 90" in shown["station.latitude"]
    assert "station.id: String should match pattern" in shown["station.id"]
    assert "station.timezone: unknown IANA timezone 'Mars/Olympus'" in shown["station.timezone"]
    assert "sensors[0].sample_rate: " in shown["sensors[0].sample_rate"]

    written = (tmp_path / "pond" / "station.toml").read_text()
    data = tomllib.loads(written)
    assert data["station"] | {} == {
        **data["station"],
        "id": "pond-1",
        "name": "pond-1",
        "latitude": 47.5,
        "longitude": -1.2577,
        "elevation": 312.0,
        "timezone": "Europe/Zurich",
    }
    assert data["sensors"][0]["sample_rate"] == "32kHz"
    assert data["sensors"][0]["schedule"] == "dawn_chorus"
    # init's file, comments and all, with only the answered values changed
    expected = template_text("pond-1")
    for path, key, value in [
        ("[station]", "latitude", 47.5),
        ("[station]", "elevation", 312.0),
        ("[station]", "timezone", "Europe/Zurich"),
        ("[[sensors]]", "sample_rate", "32kHz"),
        ("[[sensors]]", "chunk", "30s"),
        ("[[sensors]]", "schedule", "dawn_chorus"),
    ]:
        expected = set_value(expected, path, key, value)
    assert written == expected
    assert "# unique in your fleet" in written and "# IANA name" in written
    config = load_config(tmp_path / "pond" / "station.toml")
    assert config.station.tz.key == "Europe/Zurich"


def test_guided_init_stopped_by_end_of_input_writes_nothing(tmp_path: Path) -> None:
    term = Terminal(
        [sys.executable, "-m", "fieldstation.cli", "init", "pond", "--guided"], tmp_path
    )
    term.expect("station.id [")
    os.write(term.fd, b"\x04")  # Ctrl-D
    term.expect("nothing written")
    assert term.wait() == 1
    assert not (tmp_path / "pond").exists()
