//! OVASABI gRPC contracts.
//!
//! This crate owns the `.proto` files of the platform (under `proto/` in this crate) and the
//! Rust code generated from them at build time with `protox` and `tonic-prost-build` (no system
//! `protoc` needed):
//!
//! * [`common`]: `common.Metadata`, the canonical metadata shared by every service (this
//!   package is deliberately not versioned);
//! * [`user::v0`]: `UserService` (register, login, tokens, own profile);
//! * [`admin::v0`]: `AdminService` (accounts, roles, disabling);
//! * [`security::v0`]: `SecurityService` (audit log, policies);
//! * [`campaign::v0`]: `CampaignService` (campaigns and their live analytics);
//! * [`content::v0`]: `ContentService` (content, search, comments, reactions);
//! * [`broadcast::v0`]: `BroadcastService` (publish, state, frequency, direct messages, and a
//!   server-streaming subscription);
//! * [`localization::v0`]: `LocalizationService` (Fluent translations, fallback, import/export);
//! * [`babel::v0`]: `BabelService` (markets, price rules, prices for a country);
//! * [`notification::v0`]: `NotificationService` (templates, sends, the inbox and a
//!   server-streaming watch of it, preferences, webhooks, delivery records);
//! * [`scheduler::v0`]: `SchedulerService` (scheduled jobs, their runs, pause, resume,
//!   trigger);
//! * [`talent::v0`]: `TalentService` (talent profiles, weekly availability, free slots,
//!   bookings and their transitions);
//! * [`commerce::v0`]: `CommerceService` (products, Babel-priced orders, idempotent payments,
//!   refunds, invoices, the ledger);
//! * [`nexus::v0`]: `NexusService` (the operation registry, patterns and their durable runs).
//! * [`referral::v0`]: `ReferralService` (referral codes, attributed sign-ups, held rewards
//!   and their review, stats);
//! * [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of all of the above (and the well-known
//!   types they import), for gRPC server reflection;
//! * [`convert`]: conversions between `serde_json` values and the protobuf well-known
//!   `Value`/`Struct` types, and between [`common::Metadata`] and its JSON object form.
//!
//! Each service module holds the messages, a `*_client` module (`*Client<T>`) and a `*_server`
//! module (the service trait and its `*Server<T>` wrapper). Well-known types map to
//! [`prost_types`] (`google.protobuf.Struct` → [`prost_types::Struct`], `google.protobuf.Value`
//! → [`prost_types::Value`]). This crate is a leaf: it depends on neither `engine` nor
//! `services`.

pub mod convert;

/// Encoded `google.protobuf.FileDescriptorSet` of every OVASABI contract, including the
/// well-known types they import; feed it to `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ovasabi_descriptor.bin"));

/// Shared types (`common` proto package, not versioned).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod common {
    tonic::include_proto!("common");
}

/// Accounts and authentication (`user` proto packages).
pub mod user {
    /// `user.v0`: `UserService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("user.v0");
    }
}

/// Account administration (`admin` proto packages).
pub mod admin {
    /// `admin.v0`: `AdminService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("admin.v0");
    }
}

/// Audit log and policies (`security` proto packages).
pub mod security {
    /// `security.v0`: `SecurityService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("security.v0");
    }
}

/// Campaigns (`campaign` proto packages).
pub mod campaign {
    /// `campaign.v0`: `CampaignService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("campaign.v0");
    }
}

/// Content, comments and reactions (`content` proto packages).
pub mod content {
    /// `content.v0`: `ContentService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("content.v0");
    }
}

/// Real-time broadcast (`broadcast` proto packages).
pub mod broadcast {
    /// `broadcast.v0`: `BroadcastService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("broadcast.v0");
    }
}

/// Translations (`localization` proto packages).
pub mod localization {
    /// `localization.v0`: `LocalizationService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("localization.v0");
    }
}

/// Markets and prices (`babel` proto packages).
pub mod babel {
    /// `babel.v0`: `BabelService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("babel.v0");
    }
}

/// Notifications (`notification` proto packages).
pub mod notification {
    /// `notification.v0`: `NotificationService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("notification.v0");
    }
}

/// Scheduled jobs (`scheduler` proto packages).
pub mod scheduler {
    /// `scheduler.v0`: `SchedulerService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("scheduler.v0");
    }
}

/// Talent profiles and bookings (`talent` proto packages).
pub mod talent {
    /// `talent.v0`: `TalentService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("talent.v0");
    }
}

/// Patterns and their durable runs (`nexus` proto packages).
pub mod nexus {
    /// `nexus.v0`: `NexusService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("nexus.v0");
    }
}

/// Referral codes, referrals and their review (`referral` proto packages).
pub mod referral {
    /// `referral.v0`: `ReferralService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("referral.v0");
    }
}

/// Products, orders, payments, refunds, invoices and the ledger (`commerce` proto packages).
pub mod commerce {
    /// `commerce.v0`: `CommerceService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod v0 {
        tonic::include_proto!("commerce.v0");
    }
}
