// Package server is the nsbroker gRPC service (nsbroker.v1.Broker) over a
// broker.Broker, and its tenancy model.
//
// Who a connection is depends on how it arrived, and one gRPC server,
// built with Credentials, serves every listener:
//   - AdminListener: the admin socket; peers its allow func admits (by
//     SO_PEERCRED) are admin and may call every rpc on every namespace;
//   - TenantListener: a socket opened inside an attached namespace; its
//     peers are that namespace's tenant and reach that namespace only;
//   - any other listener (TCP): mutual TLS, and the client certificate's
//     ClientName (its one SAN URI, else its one subject common name)
//     names a tenant and its namespaces through a TenantMap.
//
// Tenants may not attach or detach (PERMISSION_DENIED). A tenant naming a
// namespace it may not reach gets NOT_FOUND with the very message a
// namespace that is not attached gets. An empty namespace field means the
// tenant's namespace when it has exactly one. ToStatus gives the codes of
// everything else; Config the limits on subscribers and publish rate.
package server
