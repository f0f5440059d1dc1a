"""What the tables and figures read from a run folder (:class:`Run`), the paper's order of
networks and methods, and the error a figure that cannot be drawn raises."""

from __future__ import annotations

import zipfile
import zlib

from bmr_jax.errors import BmrJaxError
from bmr_jax.runs.folder import RunFolder

# the paper's order of networks and methods (tables here, lines in bmr_jax.results.plots)
NET_ORDER = ("mlp", "lenet5", "vit", "mixer", "lenet_300_100", "lenet5_caffe")
METHOD_ORDER = ("flat_map", "flat_ff", "tiered_ff", "bmr_ss", "bmr_rhs", "bmr_units")


def paper_rank(value: str, order: tuple[str, ...]) -> tuple[int, str]:
    """Sort key: position in ``order`` (unknown values last, by name)."""
    return (order.index(value) if value in order else len(order), value)



class PlotError(BmrJaxError):
    """The run folders given cannot make the requested figure."""


class Run:
    """What a figure needs from one run folder."""

    def __init__(self, path):
        folder = RunFolder(path)
        self.folder = folder
        self.config = folder.read_config()
        self.metrics = folder.metrics()
        self.method, self.net = self.config.method, self.config.net.name
        self.dataset = self.config.data.name

    def series(self, key, x: str = "block"):
        """``(x, values)`` of the blocks that have ``key`` (test metrics may be every k-th);
        ``x`` is ``block`` or ``step``."""
        kept = [r for r in self.metrics if r.get(key) is not None]
        return [r[x] for r in kept], [r[key] for r in kept]

    def posterior(self):
        """``(weights, masks)`` per layer, in the order of the network's forward pass (run
        folders written before that order was kept stored the layers alphabetically)."""
        if not self.folder.posterior_path.is_file():
            raise PlotError(f"{self.folder.path}: no posterior.npz (an unfinished run, or a "
                            "record without weights: bmr-jax report --records)")
        try:
            weights, masks = self.folder.load_posterior()
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            reason = type(e).__name__
            raise PlotError(f"{self.folder.posterior_path}: unreadable ({reason})") from None
        order = _forward_order(self.net, self.config.net.preset, self.dataset)
        names = sorted(weights, key=lambda k: order.index(k) if k in order else len(order))
        return {k: weights[k] for k in names}, masks


def _forward_order(net: str, preset: str, dataset: str) -> list[str]:
    """Layer names of ``net`` in the order its forward pass calls them."""
    from flax import nnx

    from bmr_jax import nets
    from bmr_jax.bayes.layers import build_layer_view

    channels = 3 if dataset.startswith("cifar") else 1
    size = nets.get_net_spec(net).image_size or (32 if channels == 3 else 28)
    shape = (size, size, channels)
    module = nets.create_net(net, 100 if dataset == "cifar100" else 10, shape, preset,
                             rngs=nnx.Rngs(0))  # fmt: skip
    return build_layer_view(module, shape).names()
