"""`-q` / `-v` and progress bars (lora_ft/console.py): what reaches stderr at each verbosity."""

from __future__ import annotations

import logging
import os

import pytest

from lora_ft import cli, console

log = logging.getLogger("lora_ft.test_console")


@pytest.mark.parametrize(
    "verbosity, expected",
    [
        (-1, []),
        (0, ["lora-ft: warning: disk nearly full"]),
        (1, ["progress line", "lora-ft: warning: disk nearly full"]),
    ],
)
def test_each_verbosity_prints_what_it_promises(capsys, verbosity, expected):
    console.configure(verbosity)
    log.info("progress line")
    log.warning("disk nearly full")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 1)[1] if line[:2].isdigit() else line for line in lines] == expected


def test_no_progress_bars_when_stderr_is_not_a_terminal_or_quiet(capsys):
    console.configure(0)  # pytest's captured stderr is not a terminal: a log file, as on a cluster
    assert not console.progress_bars()
    console.configure(-1)
    assert not console.progress_bars()


def test_the_cli_takes_quiet_and_verbose_but_not_both(capsys):
    assert cli.main(["-q", "config", "help"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["-q", "-v", "config", "help"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_run_log_keeps_info_lines_whatever_the_console_shows(tmp_path):
    from lora_ft.run_dir import close_run_log, open_run_log

    console.configure(-1)
    open_run_log(tmp_path, is_main=True)
    log.info("step 1 loss 3.2")
    close_run_log()
    assert "step 1 loss 3.2" in (tmp_path / "train.log").read_text()


def test_hugging_face_bars_are_off_too_when_ours_are(monkeypatch):
    """transformers' "Loading weights" / GGUF bars and datasets' bars would fill a job's log with redraws."""
    from transformers.utils import logging as transformers_logging

    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    was_enabled = transformers_logging.is_progress_bar_enabled()
    try:
        console.configure(0)  # pytest's stderr is not a terminal
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
        assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"
        assert not transformers_logging.is_progress_bar_enabled()
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def test_a_users_own_hugging_face_bar_setting_wins(monkeypatch):
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    monkeypatch.delenv("HF_DATASETS_DISABLE_PROGRESS_BARS", raising=False)
    console.configure(0)
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"
