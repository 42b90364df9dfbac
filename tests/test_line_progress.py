"""Progress without a terminal (logs, CI): long work is reported as a log line at most every 30 s."""

from __future__ import annotations

from compress.run.progress import LineProgress, track


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_long_task_is_reported_every_interval_with_time_left():
    lines, clock = [], Clock()
    p = LineProgress(lines.append, every_s=30, clock=clock)
    with p, track(p, "fine-tuning (prune)", 8) as advance:
        clock.now = 10
        advance()  # 10 s: too soon to say anything
        assert lines == []
        clock.now = 40
        advance()  # 2 of 8 after 40 s: 6 more at 20 s each
        clock.now = 50
        advance()  # 10 s after the last line: quiet
        clock.now = 75
        advance(5)
    assert lines == ["fine-tuning (prune): 2/8 (25%), 40s elapsed, about 2m00s left",
                     "fine-tuning (prune): 8/8 (100%), 1m15s elapsed"]


def test_short_tasks_say_nothing_and_unknown_totals_count_up():
    lines, clock = [], Clock()
    p = LineProgress(lines.append, every_s=30, clock=clock)
    quick = p.add_task("export", total=1)
    p.advance(quick)
    p.remove_task(quick)
    p.advance(quick)  # a removed task is ignored
    open_ended = p.add_task("reading images", total=None)
    clock.now = 31
    p.update(open_ended, completed=500, description="reading images (train)")
    assert lines == ["reading images (train): 500 done, 31s elapsed"]


def test_the_cli_without_a_terminal_logs_progress_lines(cli, write_recipe, recipe_dict, monkeypatch, tmp_path):
    """CliRunner is not a terminal: `compress run` gets LineProgress (every 0 s here, so it speaks)."""
    from compress.cli import app
    from compress.run import progress as progress_module

    original = progress_module.LineProgress.__init__
    monkeypatch.setattr(progress_module.LineProgress, "__init__",
                        lambda self, log, every_s=30.0, clock=None: original(self, log, 0.0, clock))
    result = cli.invoke(app, ["run", str(write_recipe(recipe_dict)), "--out", str(tmp_path / "runs")])
    assert result.exit_code in (0, 1), result.output
    assert "elapsed" in result.output
