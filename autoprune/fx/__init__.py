"""The one torch.fx layer: tracing, shape probing, conv→BN→activation chains, BN folding, module swaps.

The channel graph, the sensitivity engine and the masked executor all rewrite or
inspect traced models through this package; none of them traces on its own.
"""
