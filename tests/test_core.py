import pytest

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.cli.main import main
from marrowscope.io.atomic import atomic_path, write_text_atomic


def test_box_rejects_degenerate():
    with pytest.raises(ValueError):
        Box(10, 10, 10, 20)


def test_annotations_shift_and_region():
    ann = CellAnnotations(
        cells=(Cell(Box(0, 0, 10, 10), "lymphocyte"), Cell(Box(100, 100, 120, 120), None)),
        regions=(Region(Box(0, 0, 50, 50), 1),),
    )
    moved = ann.shifted(-5, 5)
    assert moved.cells[0].box.as_tuple() == (-5, 5, 5, 15)
    assert moved.regions[0].box.as_tuple() == (-5, 5, 45, 55)
    assert len(ann.in_region(ann.regions[0])) == 1
    assert ann.label_counts() == {"lymphocyte": 1, "haematological_structure": 1}


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "out.txt"
    write_text_atomic(p, "old")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == [".marrowscope-owned", "out.txt"]  # no temporary


def test_cli_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "marrowscope" in capsys.readouterr().out.lower()


def test_cli_usage_errors_are_one_line_not_tracebacks(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert "No such command" in err and "Traceback" not in err


def test_cli_returns_the_code_of_typer_exit():
    import typer

    from marrowscope.cli.app import app

    @app.command("exit-three-for-test", hidden=True)
    def _exit_three() -> None:
        raise typer.Exit(3)

    try:
        assert main(["exit-three-for-test"]) == 3
    finally:
        app.registered_commands[:] = [c for c in app.registered_commands if c.name != "exit-three-for-test"]
