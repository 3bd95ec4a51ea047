"""Assets, one module per stage: each reads its inputs, calls domain code, writes, and reports metadata."""
