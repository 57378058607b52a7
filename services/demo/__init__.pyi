from ._cli import commands as commands
from ._stream import Published as Published
from ._stream import run_demo as run_demo
from ._up import run_in_up as run_in_up
