"""The weight-shared supernet: one set of weights for every plan of a space (Stage-wise Pruning).

* :mod:`~autoprune.supernet.executor`: :class:`SupernetExecutor`, channels reordered by
  importance so first-k = top-k, any plan run by slicing;
* :mod:`~autoprune.supernet.stages`: :class:`StageGraph`, the resolution stages cut out of the fx graph;
* :mod:`~autoprune.supernet.training`: :class:`Supernet`, stage-wise in-place distillation with
  sandwich sampling, save / load;
* :mod:`~autoprune.supernet.proxy`: :class:`SupernetProxy`, the ``supernet`` search proxy
  (registered with :func:`autoprune.search.proxies.create_proxy` on import).
"""

from autoprune.search.proxies import PROXY_FACTORIES
from autoprune.supernet.executor import SupernetExecutor
from autoprune.supernet.proxy import SupernetProxy, create_supernet_proxy
from autoprune.supernet.stages import StageGraph
from autoprune.supernet.training import Supernet, SupernetConfig, sandwich, train_supernet

PROXY_FACTORIES["supernet"] = create_supernet_proxy

__all__ = [
    "StageGraph",
    "Supernet",
    "SupernetConfig",
    "SupernetExecutor",
    "SupernetProxy",
    "create_supernet_proxy",
    "sandwich",
    "train_supernet",
]
