//! `talent.v0.TalentService` over the talent service: profiles, their weekly availability and
//! free slots, and bookings with their transitions. Enum strings (`visibility`, `side`,
//! `status`) are checked here and refused with `INVALID_ARGUMENT` naming the field.

use proto::talent::v0 as pb;
use proto::talent::v0::talent_service_server::{TalentService, TalentServiceServer};
use services::talent::{
    Availability, Booking, BookingSide, BookingStatus, DateException, Hours, NewBooking,
    NewProfile, Profile, ProfileFilter, ProfileUpdate, Slot, SlotQuery, Visibility, WeeklyRule,
};
use tonic::{Request, Response, Status};

use super::{GrpcState, caller, cursor, limit, status};

pub fn server(state: GrpcState) -> TalentServiceServer<Talent> {
    TalentServiceServer::new(Talent(state))
}

pub struct Talent(GrpcState);

/// `"public"` or `"private"`.
fn visibility(s: &str) -> Result<Visibility, Status> {
    Visibility::parse("visibility", s).map_err(status)
}

/// `"client"` (also when empty) or `"talent"`.
fn side(s: &str) -> Result<BookingSide, Status> {
    match s {
        "" => Ok(BookingSide::Client),
        s => BookingSide::parse("side", s).map_err(status),
    }
}

/// An optional booking status filter.
fn booking_status(s: Option<&str>) -> Result<Option<BookingStatus>, Status> {
    s.map(|s| BookingStatus::parse("status", s))
        .transpose()
        .map_err(status)
}

fn rules_in(rules: Vec<pb::WeeklyRule>) -> Vec<WeeklyRule> {
    rules
        .into_iter()
        .map(|r| WeeklyRule {
            weekday: r.weekday,
            start: r.start,
            end: r.end,
        })
        .collect()
}

fn exceptions_in(exceptions: Vec<pb::DateException>) -> Vec<DateException> {
    exceptions
        .into_iter()
        .map(|e| DateException {
            date: e.date,
            hours: e
                .hours
                .into_iter()
                .map(|h| Hours {
                    start: h.start,
                    end: h.end,
                })
                .collect(),
        })
        .collect()
}

fn availability_pb(a: Availability) -> pb::Availability {
    pb::Availability {
        rules: a
            .rules
            .into_iter()
            .map(|r| pb::WeeklyRule {
                weekday: r.weekday,
                start: r.start,
                end: r.end,
            })
            .collect(),
        exceptions: a
            .exceptions
            .into_iter()
            .map(|e| pb::DateException {
                date: e.date,
                hours: e
                    .hours
                    .into_iter()
                    .map(|h| pb::Hours {
                        start: h.start,
                        end: h.end,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn profile_pb(p: Profile) -> pb::Profile {
    pb::Profile {
        id: p.id,
        user_id: p.user_id,
        headline: p.headline,
        bio: p.bio,
        skills: p.skills,
        hourly_rate_sku: p.hourly_rate_sku,
        timezone: p.timezone,
        visibility: p.visibility.as_str().to_owned(),
        availability: Some(availability_pb(p.availability)),
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

fn booking_pb(b: Booking) -> pb::Booking {
    pb::Booking {
        id: b.id,
        talent_id: b.talent_id,
        talent_user_id: b.talent_user_id,
        client_id: b.client_id,
        start: b.start,
        end: b.end,
        status: b.status.as_str().to_owned(),
        note: b.note,
        created_at: b.created_at,
        updated_at: b.updated_at,
        country: b.country,
        order_id: b.order_id,
    }
}

fn slot_pb(s: Slot) -> pb::Slot {
    pb::Slot {
        start: s.start,
        end: s.end,
    }
}

#[tonic::async_trait]
impl TalentService for Talent {
    async fn create_profile(
        &self,
        req: Request<pb::CreateProfileRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let new = NewProfile {
            user_id: r.user_id,
            headline: r.headline,
            bio: r.bio,
            skills: r.skills,
            hourly_rate_sku: r.hourly_rate_sku,
            timezone: r.timezone,
            visibility: if r.visibility.is_empty() {
                Visibility::default()
            } else {
                visibility(&r.visibility)?
            },
        };
        let p = self
            .0
            .services
            .talent
            .create_profile(&caller, new)
            .await
            .map_err(status)?;
        Ok(Response::new(profile_pb(p)))
    }

    async fn get_profile(
        &self,
        req: Request<pb::ProfileRef>,
    ) -> Result<Response<pb::Profile>, Status> {
        let caller = caller(&self.0, &req)?;
        let p = self
            .0
            .services
            .talent
            .get_profile(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(profile_pb(p)))
    }

    async fn get_profile_of_user(
        &self,
        req: Request<pb::GetProfileOfUserRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        let caller = caller(&self.0, &req)?;
        let p = self
            .0
            .services
            .talent
            .profile_of_user(&caller, &req.into_inner().user_id)
            .await
            .map_err(status)?;
        Ok(Response::new(profile_pb(p)))
    }

    async fn update_profile(
        &self,
        req: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let update = ProfileUpdate {
            headline: r.headline,
            bio: r.bio,
            skills: r.replace_skills.then_some(r.skills),
            hourly_rate_sku: r.hourly_rate_sku,
            timezone: r.timezone,
            visibility: r.visibility.as_deref().map(visibility).transpose()?,
        };
        let p = self
            .0
            .services
            .talent
            .update_profile(&caller, &r.id, update)
            .await
            .map_err(status)?;
        Ok(Response::new(profile_pb(p)))
    }

    async fn set_availability(
        &self,
        req: Request<pb::SetAvailabilityRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let availability = Availability {
            rules: rules_in(r.rules),
            exceptions: exceptions_in(r.exceptions),
        };
        let p = self
            .0
            .services
            .talent
            .set_availability(&caller, &r.id, availability)
            .await
            .map_err(status)?;
        Ok(Response::new(profile_pb(p)))
    }

    async fn delete_profile(
        &self,
        req: Request<pb::ProfileRef>,
    ) -> Result<Response<pb::DeleteProfileResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        self.0
            .services
            .talent
            .delete_profile(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteProfileResponse {}))
    }

    async fn search_profiles(
        &self,
        req: Request<pb::SearchProfilesRequest>,
    ) -> Result<Response<pb::SearchProfilesResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let filter = ProfileFilter {
            skill: r.skill,
            query: r.query,
        };
        let page = self
            .0
            .services
            .talent
            .search(&caller, &filter, limit(r.limit), cursor(&r.cursor))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SearchProfilesResponse {
            profiles: page.items.into_iter().map(profile_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn list_free_slots(
        &self,
        req: Request<pb::ListFreeSlotsRequest>,
    ) -> Result<Response<pb::ListFreeSlotsResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let query = SlotQuery {
            from: r.from,
            to: r.to,
            duration_minutes: r.duration_minutes,
        };
        let slots = self
            .0
            .services
            .talent
            .free_slots(&caller, &r.id, &query)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListFreeSlotsResponse {
            slots: slots.into_iter().map(slot_pb).collect(),
        }))
    }

    async fn book(&self, req: Request<pb::BookRequest>) -> Result<Response<pb::Booking>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let new = NewBooking {
            start: r.start,
            end: r.end,
            note: r.note,
            country: r.country,
        };
        let b = self
            .0
            .services
            .talent
            .book(&caller, &r.talent_id, new)
            .await
            .map_err(status)?;
        Ok(Response::new(booking_pb(b)))
    }

    async fn get_booking(
        &self,
        req: Request<pb::BookingRef>,
    ) -> Result<Response<pb::Booking>, Status> {
        let caller = caller(&self.0, &req)?;
        let b = self
            .0
            .services
            .talent
            .get_booking(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(booking_pb(b)))
    }

    async fn confirm_booking(
        &self,
        req: Request<pb::BookingRef>,
    ) -> Result<Response<pb::Booking>, Status> {
        let caller = caller(&self.0, &req)?;
        let b = self
            .0
            .services
            .talent
            .confirm(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(booking_pb(b)))
    }

    async fn decline_booking(
        &self,
        req: Request<pb::BookingRef>,
    ) -> Result<Response<pb::Booking>, Status> {
        let caller = caller(&self.0, &req)?;
        let b = self
            .0
            .services
            .talent
            .decline(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(booking_pb(b)))
    }

    async fn cancel_booking(
        &self,
        req: Request<pb::BookingRef>,
    ) -> Result<Response<pb::Booking>, Status> {
        let caller = caller(&self.0, &req)?;
        let b = self
            .0
            .services
            .talent
            .cancel(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(booking_pb(b)))
    }

    async fn complete_booking(
        &self,
        req: Request<pb::BookingRef>,
    ) -> Result<Response<pb::Booking>, Status> {
        let caller = caller(&self.0, &req)?;
        let b = self
            .0
            .services
            .talent
            .complete(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(booking_pb(b)))
    }

    async fn list_my_bookings(
        &self,
        req: Request<pb::ListMyBookingsRequest>,
    ) -> Result<Response<pb::ListMyBookingsResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let side = side(&r.side)?;
        let wanted = booking_status(r.status.as_deref())?;
        let page = self
            .0
            .services
            .talent
            .my_bookings(&caller, side, wanted, limit(r.limit), cursor(&r.cursor))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListMyBookingsResponse {
            bookings: page.items.into_iter().map(booking_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn list_talent_bookings(
        &self,
        req: Request<pb::ListTalentBookingsRequest>,
    ) -> Result<Response<pb::ListTalentBookingsResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let wanted = booking_status(r.status.as_deref())?;
        let page = self
            .0
            .services
            .talent
            .talent_bookings(
                &caller,
                &r.talent_id,
                wanted,
                limit(r.limit),
                cursor(&r.cursor),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListTalentBookingsResponse {
            bookings: page.items.into_iter().map(booking_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }
}
