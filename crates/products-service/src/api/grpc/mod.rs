//! The gRPC API (tonic): `productsService.ProductsService`, wire-compatible
//! with the Go original, plus `grpc.health.v1` and server reflection.

mod convert;
mod products;
mod shedding;
mod status;

pub use products::GrpcProductsApi;
pub use shedding::shed_load;

/// Code generated from `proto/products.proto`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("products_service");

    /// Encoded descriptors, served by reflection so grpcurl needs no proto.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("products_descriptor");
}
