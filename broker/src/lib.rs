//! Switchboard broker: the control plane that owns cluster-wide room membership, presence and
//! socket queries and serves them over gRPC (see the cluster and gRPC issues). Not written yet:
//! standalone mode needs no broker, and the gateway's embedding API keeps membership locally.
