//! The conditional writes (an ordered update, a delete) and what became of
//! a write, for the caller and for its event's ticket: applied or not (an
//! update's pre-image), written or maybe written (a broken connection), and
//! each product's outcome of an `insert_many`.

use mongodb::{
    bson::{doc, oid::ObjectId, Document},
    error::ErrorKind,
    options::ReturnDocument,
};
use products_core::{
    app::{DeleteOutcome, InsertOutcome, PortError, Revision, UpdateOrder, UpdateOutcome},
    domain::{Product, ProductId},
};

use super::{
    document::{
        object_id, stored_event, EventSlot, DELETED_AT, EVENT, LOG_OFFSET, LOG_PARTITION,
        PRODUCT_FIELDS, REV,
    },
    errors::{may_have_written, port_error, DUPLICATE_KEY},
    revision_of, MongoProductRepository,
};
use crate::events::Ticket;

/// The two writes that read the document as it was (an update, a delete).
impl MongoProductRepository {
    /// Applies `changes` to the live product if `order` allows. One round
    /// trip in the common case; when nothing matched, a read tells why.
    pub(super) async fn update_ordered(
        &self,
        id: ObjectId,
        order: UpdateOrder,
        changes: Document,
    ) -> Result<Updated, WriteError> {
        let mut filter = doc! { "_id": id, DELETED_AT: { "$exists": false } };
        if let UpdateOrder::Log(position) = order {
            // Same partition and not past the last applied offset: seen
            // already. Another partition (the topic was repartitioned) cannot
            // be compared, so it applies.
            filter.insert(
                "$or",
                vec![
                    doc! { LOG_PARTITION: { "$ne": position.partition } },
                    doc! { LOG_OFFSET: { "$lt": position.offset } },
                ],
            );
        }
        // Not matched: the product is missing, deleted, has seen this
        // position, or was created between the two round trips (its create
        // racing in on the other topic): then the update is tried again.
        for _ in 0..3 {
            // The document as it was: its previous event and createdAt.
            let before = self
                .raw
                .find_one_and_update(filter.clone(), changes.clone())
                .return_document(ReturnDocument::Before)
                .upsert(false)
                .await
                .map_err(WriteError::from_driver)?;
            if let Some(document) = before {
                return Ok(Updated::Applied(document));
            }
            let stored = self
                .raw
                .find_one(doc! { "_id": id })
                .await
                .map_err(|err| WriteError::NotWritten(port_error(err)))?;
            match stored {
                None => return Ok(Updated::Not(UpdateOutcome::NotFound)),
                Some(d) if d.contains_key(DELETED_AT) => {
                    return Ok(Updated::Not(UpdateOutcome::Deleted))
                }
                // Live with a log position, yet not matched: this position
                // (or a later one of its partition) was applied already.
                Some(d) if matches!(order, UpdateOrder::Log(_)) && d.contains_key(LOG_OFFSET) => {
                    return Ok(Updated::Not(UpdateOutcome::Stale))
                }
                Some(_) => {}
            }
        }
        Err(WriteError::NotWritten(PortError::Unavailable(format!(
            "product {} kept changing during the update",
            id.to_hex()
        ))))
    }

    /// A live product becomes a tombstone that carries the delete's event. An
    /// id with nothing live gets a tombstone without one (nothing changed, so
    /// no event), so a create still on its way cannot make it appear.
    pub(super) async fn delete_stored(
        &self,
        id: &ProductId,
        ticket: Option<Ticket>,
    ) -> Result<(DeleteOutcome, Revision), PortError> {
        let oid = object_id(id);
        let unset: Document = PRODUCT_FIELDS
            .iter()
            .chain(&[LOG_PARTITION, LOG_OFFSET])
            .map(|field| ((*field).to_owned(), "".into()))
            .collect();
        let mut set = doc! { DELETED_AT: mongodb::bson::DateTime::now() };
        if let Some(ticket) = &ticket {
            set.insert(EVENT, EventSlot::of(ticket.meta()).to_bson());
        }
        let before = self
            .raw
            .find_one_and_update(
                doc! { "_id": oid, DELETED_AT: { "$exists": false } },
                doc! { "$set": set, "$unset": unset, "$inc": { REV: 1_i64 } },
            )
            .upsert(false)
            .return_document(ReturnDocument::Before)
            .await;
        let before = match before {
            Ok(before) => before,
            Err(err) => return Err(WriteError::from_driver(err).settle(ticket)),
        };
        if let Some(before) = before {
            let rev = before.get_i64(REV).unwrap_or_default() + 1;
            let prior = stored_event(before).ok().flatten();
            if let Some(ticket) = ticket {
                ticket.stored(rev, None, prior);
            }
            return Ok((DeleteOutcome::Deleted, revision_of(rev)));
        }
        if let Some(ticket) = ticket {
            ticket.not_stored();
        }
        let stored = self
            .raw
            .find_one_and_update(
                doc! { "_id": oid },
                doc! { "$setOnInsert": { DELETED_AT: mongodb::bson::DateTime::now(), REV: 1_i64 } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(port_error)?;
        match stored {
            Some(document) if document.contains_key(DELETED_AT) => Ok((
                DeleteOutcome::NothingToDelete,
                revision_of(document.get_i64(REV).unwrap_or_default()),
            )),
            // Created between the two round trips: the caller may retry.
            _ => Err(PortError::Unavailable(format!(
                "product {id} was created during its delete"
            ))),
        }
    }
}

/// What `update_ordered` did: applied (the document as it was before), or
/// nothing, and why.
pub(super) enum Updated {
    Applied(Document),
    Not(UpdateOutcome),
}

/// A failed write, by whether it may still have been applied.
pub(super) enum WriteError {
    NotWritten(PortError),
    Maybe(PortError),
}

impl WriteError {
    pub(super) fn from_driver(err: mongodb::error::Error) -> Self {
        if may_have_written(&err) {
            Self::Maybe(port_error(err))
        } else {
            Self::NotWritten(port_error(err))
        }
    }

    /// Tells the ticket, and gives the caller its error.
    pub(super) fn settle(self, ticket: Option<Ticket>) -> PortError {
        match self {
            Self::NotWritten(err) => {
                if let Some(ticket) = ticket {
                    ticket.not_stored();
                }
                err
            }
            Self::Maybe(err) => {
                if let Some(ticket) = ticket {
                    ticket.unknown();
                }
                err
            }
        }
    }
}

pub(super) fn settle_failed(ticket: Option<Ticket>, err: &mongodb::error::Error) {
    let Some(ticket) = ticket else { return };
    if may_have_written(err) {
        ticket.unknown();
    } else {
        ticket.not_stored();
    }
}

/// Each product's outcome of an `insert_many`, or `None` when the whole
/// batch failed (nothing is known about any of them).
pub(super) fn outcome_views(
    outcomes: &Result<Vec<Result<InsertOutcome, PortError>>, PortError>,
    len: usize,
) -> Vec<Option<Result<InsertOutcome, ()>>> {
    match outcomes {
        Ok(outcomes) => outcomes
            .iter()
            .map(|o| Some(o.as_ref().map(|o| *o).map_err(drop)))
            .collect(),
        Err(_) => vec![None; len],
    }
}

pub(super) fn insert_many_outcomes(
    result: Result<mongodb::results::InsertManyResult, mongodb::error::Error>,
    products: &[Product],
) -> Result<Vec<Result<InsertOutcome, PortError>>, PortError> {
    let mut outcomes: Vec<Result<InsertOutcome, PortError>> =
        vec![Ok(InsertOutcome::Inserted); products.len()];
    let err = match result {
        Ok(_) => return Ok(outcomes),
        Err(err) => err,
    };
    let ErrorKind::InsertMany(failure) = err.kind.as_ref() else {
        return Err(port_error(err));
    };
    if failure.write_concern_error.is_some() {
        // Written but not as durably as asked: unknown, so retry it all.
        return Err(port_error(err));
    }
    for write_error in failure.write_errors.iter().flatten() {
        let Some(outcome) = outcomes.get_mut(write_error.index) else {
            return Err(PortError::Internal(format!(
                "insert_many reported an error at index {} of {}",
                write_error.index,
                products.len()
            )));
        };
        *outcome = if write_error.code == DUPLICATE_KEY {
            Ok(InsertOutcome::AlreadyExists)
        } else {
            Err(PortError::Internal(format!(
                "insert of product {} failed: {} ({})",
                products[write_error.index].id, write_error.message, write_error.code
            )))
        };
    }
    Ok(outcomes)
}
