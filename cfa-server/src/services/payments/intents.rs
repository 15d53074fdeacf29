//! Payment intents: a pending donation gets at most one live payment, created at the provider in
//! the same transaction.

use uuid::Uuid;

use super::provider::{PaymentProvider, ProviderError};
use crate::domain::donation::DonationStatus;
use crate::domain::event::{DomainEvent, PaymentEvent};
use crate::domain::money::{Currency, MAX_DONATION_MAJOR};
use crate::domain::payment::{Payment, PaymentStatus};
use crate::services::outbox_event;
use crate::storage::{StoreError, Tx};

/// An intent to create, parsed from the wire.
#[derive(Clone, Debug)]
pub struct NewIntent {
    /// The donation it pays for.
    pub donation_id: Uuid,
    /// The amount as written (a decimal number), read in the donation's currency.
    pub amount: String,
    /// The currency named, if any; it must be the donation's.
    pub currency: Option<Currency>,
}

/// Why an intent was refused.
#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    /// No donation has this id.
    #[error("donation {0} not found")]
    DonationNotFound(Uuid),
    /// The donation is already paid, failed or refunded.
    #[error("donation {id} is {}, not PENDING", status.as_str())]
    DonationNotPending {
        /// The donation.
        id: Uuid,
        /// Its status.
        status: DonationStatus,
    },
    /// The currency named is not the donation's.
    #[error("the donation is in {expected}, not {given}")]
    CurrencyMismatch {
        /// The donation's currency.
        expected: Currency,
        /// The one named.
        given: Currency,
    },
    /// The amount is not a valid amount of the donation's currency.
    #[error("{0}")]
    InvalidAmount(crate::domain::money::AmountError),
    /// The amount is not the donation's.
    #[error("the donation is for {} {currency}, the intent must be too", currency.format_minor(*expected))]
    AmountMismatch {
        /// The donation's amount, minor units.
        expected: i64,
        /// Its currency.
        currency: Currency,
    },
    /// The donation already has a payment that has not failed.
    #[error("donation {donation} already has payment {payment} ({}); use it", status.as_str())]
    PaymentExists {
        /// The donation.
        donation: Uuid,
        /// Its live payment.
        payment: Uuid,
        /// That payment's status.
        status: PaymentStatus,
    },
    /// The provider refused to create it.
    #[error("the payment provider refused: {0}")]
    ProviderRefused(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ProviderError> for IntentError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Refused(m) => IntentError::ProviderRefused(m),
            ProviderError::Store(e) => IntentError::Store(e),
        }
    }
}

/// Creates an `INITIATED` payment for a pending donation, in `tx`: amount and currency must be
/// the donation's, the donation may have no other live payment, and the provider creates its
/// side of the intent in the same transaction. Its `payment.initiated` event records the intent
/// on the donation.
pub async fn create(
    tx: &mut dyn Tx,
    cmd: NewIntent,
    provider: &dyn PaymentProvider,
) -> Result<Payment, IntentError> {
    let donation = tx
        .donation_for_update(cmd.donation_id)
        .await?
        .ok_or(IntentError::DonationNotFound(cmd.donation_id))?;
    if donation.status != DonationStatus::Pending {
        return Err(IntentError::DonationNotPending {
            id: donation.id,
            status: donation.status,
        });
    }
    if let Some(given) = cmd.currency
        && given != donation.currency
    {
        return Err(IntentError::CurrencyMismatch {
            expected: donation.currency,
            given,
        });
    }
    let amount_minor = donation
        .currency
        .parse_amount(&cmd.amount, MAX_DONATION_MAJOR)
        .map_err(IntentError::InvalidAmount)?;
    if amount_minor != donation.amount_minor {
        return Err(IntentError::AmountMismatch {
            expected: donation.amount_minor,
            currency: donation.currency,
        });
    }
    if let Some(existing) = tx.live_payment_for_donation(donation.id).await? {
        return Err(IntentError::PaymentExists {
            donation: donation.id,
            payment: existing.id,
            status: existing.status,
        });
    }
    let payment = new_payment(
        donation.id,
        amount_minor,
        donation.currency,
        provider.name(),
    );
    provider
        .create_intent(
            tx,
            &payment.payment_intent_id,
            amount_minor,
            payment.currency,
        )
        .await?;
    tx.insert_payment(&payment).await?;
    let event = PaymentEvent::moved(PaymentStatus::Initiated, &payment, None);
    tx.insert_outbox(&outbox_event(
        DomainEvent::Payment(event),
        payment.updated_at,
    ))
    .await?;
    Ok(payment)
}

fn new_payment(donation_id: Uuid, amount_minor: i64, currency: Currency, gateway: &str) -> Payment {
    let now = crate::domain::now();
    let intent_id = format!("pi_{}", Uuid::new_v4().simple());
    Payment {
        id: Uuid::new_v4(),
        client_secret: format!("{intent_id}_secret_{}", Uuid::new_v4().simple()),
        payment_intent_id: intent_id,
        donation_id,
        amount_minor,
        currency,
        status: PaymentStatus::Initiated,
        gateway: gateway.to_string(),
        version: 1,
        refunded_minor: 0,
        last_event_at: None,
        created_at: now,
        updated_at: now,
    }
}
