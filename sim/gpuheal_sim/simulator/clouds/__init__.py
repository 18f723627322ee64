"""The clouds the simulator plays, so the providers' real SDKs can reboot simulated nodes.

Each cloud answers its SDK's real requests on the simulator's HTTPS listener, at the paths the real
service uses (EC2's query API at ``/``, Azure Resource Manager under ``/subscriptions/``, Compute
Engine under ``/compute/v1/``, Redfish under ``/redfish/v1/``), or on a gRPC port of its own
(Nebius). Rebooting a machine there reboots the simulated node whose ``providerID`` (or Redfish
annotation) names it, through the same node lifecycle as ``POST /sim/v1/nodes/{name}/reboot``.

The fleet's nodes carry the identities of one cloud (``FleetConfig.cloud``); every cloud is served
whichever that is. ``SimulatedCluster.client_environment()`` gives the environment in which each
SDK's standard credential chain and endpoint settings reach these endpoints. Faults (throttling,
not-found, permission denied) are injected per cloud through ``POST /sim/v1/clouds/{cloud}/faults``.
"""
