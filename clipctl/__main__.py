from clipctl.cli import app

app(prog_name="clipctl")
