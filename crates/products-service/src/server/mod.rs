//! Wiring and lifecycle. [`Application::build`] reads nothing but its
//! [`Settings`]: it creates the adapters, the use cases and both APIs, and
//! binds every listener (port 0 picks a free port, which tests use).
//! [`Application::run_until_stopped`] serves until the shutdown token is
//! cancelled, then lets in-flight requests finish within the configured grace
//! period.

mod background;
mod http_serve;
mod signals;
mod tcp;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{routing::get, Router};
use products_core::app::{NoCache, ProductCache, ProductService, SystemClock};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use signals::shutdown_on_signal;

use crate::{
    adapters::{
        idempotency::{MongoKeyStore, RedisKeyStore},
        kafka::{
            dead_letter::DeadLetterWriter,
            publisher::{events_producer, producer, KafkaCommandPublisher},
        },
        mongo::MongoProductRepository,
        object_id::ObjectIdGenerator,
        redis_cache::RedisProductCache,
    },
    api::{
        auth::Authenticator,
        grpc::{pb, shed_load, GrpcProductsApi},
        http::{self, idempotency::Idempotency, AppState, Probe, Readiness},
        rate_limit::RateLimiter,
    },
    config::Settings,
    events::{EventRelay, RelayStore, RelayTask},
    idempotency::IdempotencyStore,
    pipeline::applier::{Applier, RetryPolicy},
    search::{IndexFeed, ProductIndex},
    telemetry,
    tls::{self, PemIdentity},
};

pub struct Application {
    settings: Settings,
    http_listener: TcpListener,
    grpc_listener: TcpListener,
    metrics_listener: TcpListener,
    http_tls: Option<Arc<rustls::ServerConfig>>,
    grpc_tls: Option<PemIdentity>,
    products: ProductService,
    applier: Applier,
    repository: Arc<MongoProductRepository>,
    publisher: Arc<KafkaCommandPublisher>,
    event_relay: Option<RelayTask>,
    search_index: Option<Arc<ProductIndex>>,
    readiness: Arc<Readiness>,
    auth: Option<Arc<Authenticator>>,
    rate_limiter: Option<Arc<RateLimiter>>,
    idempotency: Option<Arc<Idempotency>>,
    /// The MongoDB key store, purged of expired keys in the background.
    idempotency_purge: Option<Arc<MongoKeyStore>>,
}

impl Application {
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        tls::install_crypto_provider();
        let auth = Authenticator::from_settings(&settings.auth).context("invalid auth settings")?;
        let rate_limiter = RateLimiter::from_settings(&settings.rate_limit);
        settings.resolve_secrets()?;
        let http_tls = if settings.http.tls.enabled {
            let identity = PemIdentity::load(&settings.http.tls).context("HTTP TLS")?;
            Some(identity.server_config(&[b"h2", b"http/1.1"])?)
        } else {
            None
        };
        let grpc_tls = if settings.grpc.tls.enabled {
            Some(PemIdentity::load(&settings.grpc.tls).context("gRPC TLS")?)
        } else {
            None
        };
        let plain_repository = MongoProductRepository::connect(&settings.mongo)
            .await
            .context("invalid MongoDB settings")?;
        // With events on, every write stores its event and hands it to the
        // relay; the relay itself uses the plain repository.
        let (repository, event_relay) = if settings.events.enabled {
            let producer = events_producer(&settings.kafka, settings.events.linger_ms)
                .context("invalid Kafka settings")?;
            let store: Arc<dyn RelayStore> = Arc::new(plain_repository.clone());
            let (relay, task) = EventRelay::new(&settings.events, store, producer);
            (Arc::new(plain_repository.with_events(relay)), Some(task))
        } else {
            (Arc::new(plain_repository), None)
        };
        let mut probes = vec![{
            let repository = repository.clone();
            Probe::new("mongodb", move || {
                let repository = repository.clone();
                async move {
                    use products_core::app::ProductRepository;
                    repository.ping().await.map_err(|e| e.to_string())
                }
            })
        }];
        let cache: Arc<dyn ProductCache> = if settings.redis.enabled {
            let redis = Arc::new(
                RedisProductCache::new(&settings.redis).context("invalid Redis settings")?,
            );
            let probe_redis = redis.clone();
            probes.push(Probe::new("redis", move || {
                let redis = probe_redis.clone();
                async move { redis.ping().await.map_err(|e| e.to_string()) }
            }));
            redis
        } else {
            Arc::new(NoCache)
        };
        let publisher = Arc::new(
            KafkaCommandPublisher::new(&settings.kafka).context("invalid Kafka settings")?,
        );
        let probe_kafka = publisher.clone();
        probes.push(Probe::new("kafka", move || {
            let kafka = probe_kafka.clone();
            async move { kafka.ping().await }
        }));
        let mut products = ProductService::new(
            repository.clone(),
            cache,
            publisher.clone(),
            Arc::new(ObjectIdGenerator),
            Arc::new(SystemClock),
        );
        let search_index = match (settings.search.index, settings.events.enabled) {
            (true, true) => Some(Arc::new(ProductIndex::new())),
            (true, false) => {
                tracing::warn!("search.index needs events.enabled: searches scan the database");
                None
            }
            (false, _) => None,
        };
        if let Some(index) = &search_index {
            products = products.with_search(index.clone());
            let index = index.clone();
            let stale_after = Duration::from_millis(settings.search.stale_after_ms);
            probes.push(Probe::explained("search_index", move || {
                let state = index.status().readiness(stale_after);
                async move { state }
            }));
        }
        let consumer = &settings.kafka.consumer;
        let applier = Applier::new(
            products.clone(),
            RetryPolicy::from_settings(consumer),
            consumer.workers,
        );
        // Not ready while the consumer is held up by a dependency: its
        // partitions are paused, retrying, until the dependency is back.
        let blocked = applier.blocked();
        probes.push(Probe::new("command_pipeline", move || {
            let blocked = blocked.load(std::sync::atomic::Ordering::SeqCst);
            async move {
                match blocked {
                    0 => Ok(()),
                    n => Err(format!(
                        "blocked on a dependency: {n} partition(s) retrying"
                    )),
                }
            }
        }));
        let readiness = Arc::new(Readiness::new(probes, Duration::from_secs(2)));
        let (idempotency, idempotency_purge) = idempotency_store(&settings, repository.database())?;

        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for {what} on {addr}"))
        };
        Ok(Self {
            http_listener: bind(settings.http.addr, "HTTP").await?,
            grpc_listener: bind(settings.grpc.addr, "gRPC").await?,
            metrics_listener: bind(settings.metrics.addr, "metrics").await?,
            http_tls,
            grpc_tls,
            settings,
            products,
            applier,
            repository,
            publisher,
            event_relay,
            search_index,
            readiness,
            auth,
            rate_limiter,
            idempotency,
            idempotency_purge,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        local_addr(&self.http_listener)
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        local_addr(&self.grpc_listener)
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        local_addr(&self.metrics_listener)
    }

    /// Serves HTTP, gRPC and metrics until `shutdown` is cancelled (or one of
    /// them fails, which cancels the others).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            settings,
            http_listener,
            grpc_listener,
            metrics_listener,
            http_tls,
            grpc_tls,
            products,
            applier,
            repository,
            publisher,
            event_relay,
            search_index,
            readiness,
            auth,
            rate_limiter,
            idempotency,
            idempotency_purge,
        } = self;
        let registry = telemetry::metrics::registry();
        // The relay outlives the other tasks: the last writes of the
        // pipeline and of in-flight requests still hand it events.
        let relay_stop = CancellationToken::new();
        let relay = event_relay.map(|task| {
            tokio::spawn(background::run_event_relay(
                settings.kafka.clone(),
                settings.events.clone(),
                task,
                relay_stop.clone(),
                Duration::from_secs(settings.shutdown_timeout_secs.max(1)),
            ))
        });
        // The search index feed blocks in librdkafka's poll: its own thread.
        let search_stop = CancellationToken::new();
        let search_feed = match search_index {
            Some(index) => {
                let feed = IndexFeed::new(
                    settings.kafka.clone(),
                    settings.events.clone(),
                    index,
                    repository.clone(),
                );
                let (runtime, stop) = (tokio::runtime::Handle::current(), search_stop.clone());
                Some(
                    std::thread::Builder::new()
                        .name("search-index-feed".to_owned())
                        .spawn(move || feed.run(runtime, stop))
                        .context("cannot start the search index feed")?,
                )
            }
            None => None,
        };
        let mut background = background::Tasks::new(shutdown.clone());
        background.spawn(background::ensure_indexes(repository.clone()));
        background.spawn(background::purge_tombstones(
            repository.clone(),
            Duration::from_secs(
                settings
                    .mongo
                    .tombstone_retention_hours
                    .saturating_mul(3600),
            ),
        ));
        background.spawn(async move { registry.run_upkeep(Duration::from_secs(5)).await });
        if let Some(keys) = idempotency_purge {
            background.spawn(background::purge_idempotency_keys(keys));
        }

        let dead_letters = DeadLetterWriter::new(producer(&settings.kafka)?, &settings.kafka);
        background.spawn_graceful(background::run_command_pipeline(
            settings.kafka.clone(),
            applier,
            dead_letters,
            shutdown.clone(),
            Duration::from_secs(settings.shutdown_timeout_secs),
        ));

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        background.spawn(background::report_grpc_health(
            health_reporter,
            products.clone(),
        ));

        let http_app = http::router(
            AppState {
                products: products.clone(),
                readiness,
                auth: auth.clone(),
                rate_limiter: rate_limiter.clone(),
                idempotency,
            },
            &settings.http,
        );
        let http_server = http_serve::serve(
            http_listener,
            http_app,
            http_serve::HttpServeOptions {
                tls: http_tls,
                header_read_timeout: Duration::from_millis(settings.http.header_read_timeout_ms),
            },
            shutdown.clone(),
        );

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let products_grpc = pb::products_service_server::ProductsServiceServer::new(
            GrpcProductsApi::new(products)
                .with_auth(auth)
                .with_rate_limit(rate_limiter),
        )
        .max_decoding_message_size(settings.grpc.max_message_bytes)
        .max_encoding_message_size(settings.grpc.max_message_bytes);
        let products_grpc = shed_load(products_grpc, settings.grpc.max_concurrent_requests);
        let mut grpc_builder = tonic::transport::Server::builder();
        if let Some(identity) = grpc_tls {
            grpc_builder = grpc_builder.tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(
                        identity.cert_pem,
                        identity.key_pem.expose_secret(),
                    ))
                    .timeout(Duration::from_millis(settings.http.header_read_timeout_ms)),
            )?;
        }
        let grpc_server = grpc_builder
            .timeout(Duration::from_millis(settings.grpc.request_timeout_ms))
            .layer(telemetry::grpc::GrpcTelemetryLayer)
            .add_service(health_service)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(products_grpc)
            .serve_with_incoming_shutdown(
                tcp::incoming(grpc_listener),
                shutdown.clone().cancelled_owned(),
            );

        let metrics_app = Router::new().route("/metrics", get(move || async { registry.render() }));
        let metrics_listener = {
            use axum::serve::ListenerExt;
            metrics_listener.tap_io(|stream| {
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::debug!(error = %err, "cannot set TCP_NODELAY");
                }
            })
        };
        let metrics_server = axum::serve(metrics_listener, metrics_app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());

        let stop_all = shutdown.clone();
        let servers = async move {
            let result = tokio::try_join!(
                async { http_server.await.context("HTTP server failed") },
                async { grpc_server.await.context("gRPC server failed") },
                async { metrics_server.await.context("metrics server failed") },
            );
            stop_all.cancel();
            result.map(drop)
        };
        let grace = Duration::from_secs(settings.shutdown_timeout_secs);
        let result = tokio::select! {
            result = servers => result,
            () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "in-flight requests did not finish in time; stopping anyway");
                Ok(())
            }
        };
        background.stop(grace).await;
        relay_stop.cancel();
        if let Some(relay) = relay {
            if tokio::time::timeout(grace + Duration::from_secs(2), relay)
                .await
                .is_err()
            {
                tracing::warn!("event relay did not stop in time");
            }
        }
        search_stop.cancel();
        if let Some(feed) = search_feed {
            // It notices within one poll (100 ms) or one broker question (1 s).
            if !matches!(
                tokio::task::spawn_blocking(move || feed.join()).await,
                Ok(Ok(()))
            ) {
                tracing::warn!("search index feed did not stop cleanly");
            }
        }
        publisher.flush(Duration::from_secs(5));
        tracing::info!("stopped");
        result
    }
}

/// The key store's front (none when off) and, for the MongoDB store, what
/// purges its expired keys.
type IdempotencyParts = (Option<Arc<Idempotency>>, Option<Arc<MongoKeyStore>>);

/// The `Idempotency-Key` store: Redis when it is enabled, else a MongoDB
/// collection (returned too, to purge its expired keys); `None` when
/// idempotency is off.
fn idempotency_store(
    settings: &Settings,
    database: &mongodb::Database,
) -> anyhow::Result<IdempotencyParts> {
    let config = &settings.idempotency;
    if !config.enabled {
        return Ok((None, None));
    }
    let (store, purge): (Arc<dyn IdempotencyStore>, _) = if settings.redis.enabled {
        let store = RedisKeyStore::new(&settings.redis, &config.key_prefix)
            .context("invalid Redis settings")?;
        (Arc::new(store), None)
    } else {
        let store = Arc::new(MongoKeyStore::new(database, &config.mongo_collection));
        (store.clone(), Some(store))
    };
    Ok((Some(Arc::new(Idempotency::new(store, config))), purge))
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .expect("a bound listener has a local address")
}
