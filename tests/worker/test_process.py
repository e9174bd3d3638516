"""Which commands the worker starts without ``sh`` (pure logic)."""

import pytest

from ndcctools.taskvine.worker.process import direct_argv


@pytest.mark.parametrize("command,argv", [
    ("true", ["true"]),
    ("python3 script.py --n=3 a,b x:y 50%", ["python3", "script.py", "--n=3", "a,b", "x:y",
                                            "50%"]),
    ("./prog -v", ["./prog", "-v"]),
    ("/usr/bin/env", ["/usr/bin/env"]),
])
def test_plain_words_start_directly(command, argv):
    assert direct_argv(command) == argv


@pytest.mark.parametrize("command", [
    "echo hi",  # a builtin (dash's echo is not /bin/echo)
    "exit 3", "cd d", "export A=1", "[ -f x ]", "if true", "! false", ". ./env.sh",
    "A=1 prog",  # an assignment
    "cat in > out", "a | b", "a && b", "a; b", "sleep 1 &", "echo $HOME", "ls *.txt",
    "cat ~/x", "echo 'quoted'", 'echo "q"', "a\\ b", "echo `date`", "f(x)", "a\nb",
    "a\tb", "two  spaces", " leading", "trailing ", "", "# comment", "x{1,2}",
])
def test_anything_else_goes_through_sh(command):
    assert direct_argv(command) is None
