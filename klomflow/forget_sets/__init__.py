"""Forget sets: the static kinds (random, class, indices, ...) and the derived ones chosen
from trained models (datamodel principal components, nearest neighbours, worst-case
proxies, bilevel)."""
