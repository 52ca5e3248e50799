"""The ``refinenet-tf`` command line, called through ``main(argv)``."""

import numpy as np
import pytest
from PIL import Image

from refinenet_tf import cli


def test_demo_writes_a_palette_png_of_the_input_size(tmp_path, capsys):
    assert cli.main(["demo", "--output", str(tmp_path), "--backbone", "resnet50", "--height", "65",
                     "--width", "83"]) == 0
    prediction = Image.open(tmp_path / "prediction.png")
    assert prediction.mode == "P" and prediction.size == (83, 65)
    assert np.array(prediction).max() < 21
    assert Image.open(tmp_path / "overlay.png").size == (83, 65)
    output = capsys.readouterr().out
    assert "refinenet_slim_resnet50" in output and "parameters" in output
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")], "no temporary files left"


def test_demo_into_a_file_fails_with_one_clear_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert cli.main(["demo", "--output", str(blocker), "--backbone", "resnet50"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("refinenet-tf demo: error:") and "a_file" in error and "\n" not in error


@pytest.mark.parametrize("argv", [["demo", "--height", "0"], ["demo", "--backbone", "vgg"], ["nope"]])
def test_bad_arguments_exit_with_usage_error(argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2


def test_version(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.startswith("refinenet_tf ")
