"""The SDK's private modules, one concern each; :class:`inferstream.client.Client` is their facade.

- :mod:`.core`: what the concerns share (settings, metrics, topic names, the producer),
  and resources opened on first use;
- :mod:`.topics`: topic names as users write them, and which topics exist;
- :mod:`.produce`, :mod:`.produce_sink` and :mod:`.produce_report`: validating and
  producing records, and what was produced or rejected;
- :mod:`.subscribe`: iterating over a topic, committing as it goes;
- :mod:`.requests`: request/reply over Kafka (``predict``, ``embed``);
- :mod:`.dead_letters`: listing, filtering and replaying dead letters;
- :mod:`.forward`: the client's methods that are another object's (search, topic names).

Routes are :class:`inferstream.serving.routes.RouteTable` and search is
:mod:`inferstream.search`: the client holds one of each. Nothing outside the SDK imports
these modules, and this file re-exports nothing: each module imports its siblings.
"""
