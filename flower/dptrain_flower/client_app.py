"""A ClientApp Flower's app bundle format requires; dptrain silos run `dptrain fl node`."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Refuses: a Python SuperNode cannot be a dptrain silo."""
    raise RuntimeError(
        "dptrain's silos are Rust nodes: run `dptrain fl node --superlink URL --config "
        "CONFIG --client I` instead of flower-supernode"
    )
