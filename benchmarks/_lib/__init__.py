"""What the benchmarks share. Each benchmark imports from these modules, from
``benchmarks.peers`` (the launchers of the systems compared) and from chatterd, never from
another benchmark.

cli       argument-parser setup, progress lines, the source measured, result JSON, trio.run
stats     summaries (median, max, quantiles), the highest passing rate, number formatting
procfs    CPU ticks of a process, the machine's busy share, load, RSS, a UDP socket's drops
phases    polling until a condition holds, victims, CPU over a window of time (CpuSample)
nodeapi   chatterd nodes through their HTTP API: event rows (EventLog), health counters
inject    messages into chatterd: the chatter-inject command, its protocol for many at once
tables    the side-by-side tables of systems (one column per system and row source)
iptables  iptables rules that count (PortAccounting) or drop (Loss), removed on the way out
          (running iptables itself: chatterd.testing.iptables)
netns     a network namespace of our own, and a child process inside it, cleaned up (on
          chatterd.testing.netns; hosts on a bridge: chatterd.testing.hosts)
feeds     pre-encoded datagrams (rumors, heartbeats, fake peers) and a core Node fed with them
blast     the sender process of the ingest benchmark, and the fake peers it speaks for
pyspy     sampling a node with py-spy and summing the samples per function and code path
"""
