"""Region proposals: where to look for objects.

- `felzenszwalb`: graph-based segmentation (Felzenszwalb and Huttenlocher 2004), the starting regions;
- `selective_search`: hierarchical grouping of those regions (Uijlings et al. 2013);
- `sliding_windows`: the exhaustive baseline.
"""

from scratchdet.proposals.agreement import adjusted_rand_index
from scratchdet.proposals.felzenszwalb import felzenszwalb, grid_graph
from scratchdet.proposals.selective_search import MODES, Hierarchy, Strategy, selective_search
from scratchdet.proposals.sliding_window import count_sliding_windows, sliding_windows

__all__ = [
    "MODES",
    "Hierarchy",
    "Strategy",
    "adjusted_rand_index",
    "count_sliding_windows",
    "felzenszwalb",
    "grid_graph",
    "selective_search",
    "sliding_windows",
]
