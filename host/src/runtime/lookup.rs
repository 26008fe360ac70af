//! Name lookups (`wasi:sockets/ip-name-lookup`) answered only for host names the check was granted.
//!
//! wasmtime-wasi can only switch lookups on or off for a whole instance; left on, a plugin could resolve any name
//! and so carry data out through the host's resolver (`<secret>.example.org`). This shadows the interface with
//! one that checks the name first and then hands it to wasmtime-wasi's own implementation.

use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{Host, HostResolveAddressStream, ResolveAddressStream};
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode, IpAddress, Network};
use wasmtime_wasi::p2::{DynPollable, IoError, SocketError};
use wasmtime_wasi::sockets::WasiSocketsCtxView;

use super::grants::Grants;
use super::state::CallLabels;

/// The view the shadowing implementation works on.
pub struct GrantedLookup<'a> {
    pub sockets: WasiSocketsCtxView<'a>,
    pub grants: &'a Grants,
    pub labels: &'a CallLabels,
}

/// Marker for `add_to_linker`.
pub struct GrantedLookupData;

impl HasData for GrantedLookupData {
    type Data<'a> = GrantedLookup<'a>;
}

/// `ip-name-lookup` uses `network`'s types; their conversions are wasmtime-wasi's.
impl network::Host for GrantedLookup<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.sockets, error)
    }

    fn network_error_code(&mut self, error: Resource<IoError>) -> wasmtime::Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.sockets, error)
    }
}

impl network::HostNetwork for GrantedLookup<'_> {
    fn drop(&mut self, network: Resource<Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.sockets, network)
    }
}

impl Host for GrantedLookup<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveAddressStream>, SocketError> {
        if !self.grants.names(&name) {
            tracing::warn!(plugin = %self.labels.plugin, check = self.labels.check.as_deref(), name, "Refused a name lookup the check is not granted");
            return Err(ErrorCode::AccessDenied.into());
        }
        self.sockets.resolve_addresses(network, name)
    }
}

impl HostResolveAddressStream for GrantedLookup<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        self.sockets.resolve_next_address(stream)
    }

    fn subscribe(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<Resource<DynPollable>> {
        HostResolveAddressStream::subscribe(&mut self.sockets, stream)
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        HostResolveAddressStream::drop(&mut self.sockets, stream)
    }
}
