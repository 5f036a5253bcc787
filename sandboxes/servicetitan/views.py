"""ServiceTitan read views: every field of a record, in the vendor's order, with the value a new
record starts with. A record is `fresh(VIEW, ...)`: a copy with its own values laid over."""

from __future__ import annotations

from typing import Any

ADDRESS = {"street": "", "unit": "", "city": "", "state": "", "zip": "", "country": "USA"}

VENDOR = {"id": None, "name": "New Vendor", "active": True, "isTruckReplenishment": False,
          "isMobileCreationRestricted": False, "memo": "", "deliveryOption": "Manual", "defaultTaxRate": 0.0,
          "contactInfo": {"firstName": "", "lastName": "", "phone": "", "email": "", "fax": ""}, "address": ADDRESS,
          "createdOn": None, "modifiedOn": None, "externalData": [], "customFields": []}
BILL_ITEM = {"order": 1, "name": None, "description": None, "quantity": "1.00", "cost": "0.00",
             "inventoryLocation": None, "serialNumber": None, "generalLedgerAccount": None, "costOfSaleAccount": None,
             "assetAccount": None, "id": None, "skuId": None, "receiptItemId": None, "skuType": None, "skuCode": None,
             "budgetCodeId": None}
AP_BILL_ITEM = {**{k: BILL_ITEM[k] for k in list(BILL_ITEM)[:6]}, "vendorPartNumber": None,
                **{k: BILL_ITEM[k] for k in list(BILL_ITEM)[6:]}}
INVENTORY_BILL = {"id": None, "purchaseOrderId": None, "syncStatus": "Pending", "referenceNumber": None,
                  "vendorNumber": None, "summary": None, "billDate": None, "billAmount": "0.00", "taxAmount": "0.00",
                  "shippingAmount": "0.00", "createdBy": "Sandbox", "createdOn": None, "modifiedOn": None,
                  "termName": "Net 30", "dueDate": None, "shipToDescription": None, "postDate": None, "batch": None,
                  "businessUnit": None, "taxZone": None, "vendor": None, "shipTo": None, "budgetCodeId": None,
                  "items": [], "customFields": [], "jobId": None, "jobNumber": None}
AP_BILL = {"id": None, "purchaseOrderId": None, "syncStatus": "Pending", "status": "Unreconciled",
           "source": "Standalone", "billType": "ApBill", "postDate": None, "referenceNumber": None, "vendorNumber": None,
           "summary": None, "billDate": None, "earlyDiscountDate": None, "billAmount": "0.00",
           "vendorInvoiceTotal": "0.00", "taxAmount": "0.00", "shippingAmount": "0.00", "createdBy": "Sandbox",
           "createdOn": None, "modifiedOn": None, "termName": "Net 30", "dueDate": None, "doNotPay": False,
           "dateCanceled": None, "canceledBy": None, "shipToDescription": None, "batch": None, "businessUnit": None,
           "taxZone": None, "vendor": None, "remittanceVendorInfo": None, "shipTo": None, "budgetCodeId": None,
           "items": [], "expenseItems": [], "customFields": [], "jobId": None, "jobNumber": None}
PAYMENT = {"active": True, "appliedTo": [], "authCode": None, "batch": None, "businessUnit": None, "checkNumber": None,
           "createdBy": "Sandbox", "createdOn": None, "customer": None, "customFields": [], "date": None,
           "deposit": None, "generalLedgerAccount": None, "id": None, "memo": None, "modifiedOn": None,
           "referenceNumber": None, "refundedPaymentId": None, "syncStatus": "Pending", "total": "0.00",
           "type": "Check", "typeId": "2", "unappliedAmount": "0.00"}
AP_PAYMENT = {"id": None, "active": True, "createdOn": None, "modifiedOn": None, "date": None, "approvedDate": None,
              "method": "AccountingSystem", "name": None, "printCheck": False, "amount": 0.0, "errorMessage": None,
              "status": "Unpaid", "syncStatus": "Pending", "batch": None, "glAccount": None, "businessUnit": None,
              "vendor": None, "remittanceVendor": None, "splits": [], "customFields": []}
ADJUSTMENT = {"id": None, "active": True, "number": None, "referenceNumber": "", "type": "Cycle Count",
              "inventoryLocationId": None, "businessUnitId": None, "projectId": None, "invoiceId": None,
              "createdById": 1, "memo": "", "date": None, "createdOn": None, "modifiedOn": None, "batchId": None,
              "batch": None, "syncStatus": "Pending", "canceledReason": None, "canceledById": None,
              "dateCanceled": None, "externalData": [], "items": [], "customFields": []}
GL_ACCOUNT = {"id": None, "name": "New Account", "number": None, "description": None, "type": "Expense",
              "subtype": None, "active": True, "isIntacctGroup": False, "isIntacctBankAccount": False,
              "source": "ManuallyCreated", "defaultAccountType": None, "createdOn": None, "modifiedOn": None}
WAREHOUSE = {"id": None, "name": "New Warehouse", "active": True, "address": ADDRESS, "inventoryTemplateId": None,
             "createdOn": None, "modifiedOn": None, "externalData": []}
JOB = {"id": None, "jobNumber": None, "customerId": None, "locationId": None, "businessUnitId": None, "jobTypeId": 1,
       "jobStatus": "Scheduled", "priority": "Normal", "summary": "", "completedOn": None, "invoiceId": None,
       "total": 0.0, "createdOn": None, "modifiedOn": None}


def fresh(view: dict[str, Any], **values: Any) -> dict[str, Any]:
    """A new record of `view`'s shape: its fields in order, lists and objects copied, `values` laid over."""
    if not values.keys() <= view.keys():
        raise KeyError(sorted(values.keys() - view.keys()))
    record = {key: value.copy() if isinstance(value, (list, dict)) else value for key, value in view.items()}
    record.update(values)
    return record
